//! The queries that run for every agent request or every dashboard refresh,
//! listed with sample parameters so a test can ask each backend for its plan
//! and refuse a full table scan. The SQL is the code's own constants, not a
//! copy.

use crate::CommandState;

/// A sample parameter.
#[derive(Clone, Debug)]
pub enum Param {
    Text(&'static str),
    Int(i64),
    Real(f64),
}

#[derive(Clone, Debug)]
pub struct HotQuery {
    pub name: &'static str,
    pub sql: String,
    pub params: Vec<Param>,
}

pub fn queries() -> Vec<HotQuery> {
    use Param::*;
    let fp = "0000000000000000000000000000000000000000000000000000000000000000";
    let (queued, delivered) = (
        CommandState::Queued.as_str(),
        CommandState::Delivered.as_str(),
    );
    vec![
        HotQuery {
            name: "authenticate (current certificate)",
            sql: crate::agents::session::BY_CERT_SQL.into(),
            params: vec![Text(fp)],
        },
        HotQuery {
            name: "authenticate (previous certificate)",
            sql: crate::agents::session::BY_PREV_CERT_SQL.into(),
            params: vec![Text(fp), Int(0)],
        },
        HotQuery {
            name: "touch",
            sql: crate::agents::session::TOUCH_SQL.into(),
            params: vec![Int(0), Text("X25519MLKEM768"), Text("agt_0")],
        },
        HotQuery {
            name: "batched heartbeat",
            sql: crate::agents::session::HEARTBEAT_SQL.into(),
            params: vec![Int(0), Text("agt_0")],
        },
        HotQuery {
            name: "poll",
            sql: crate::commands::ANY_OPEN_SQL.into(),
            params: vec![Text("agt_0"), Text(queued), Text(delivered)],
        },
        HotQuery {
            name: "metrics latest sample",
            sql: crate::metrics::LATEST_SQL.into(),
            params: vec![Real(1.0), Int(1), Int(2), Int(0), Text("agt_0")],
        },
        HotQuery {
            name: "operations sweep (commands)",
            sql: crate::operations::dispatch::SWEEP_COMMANDS_SQL.into(),
            params: vec![Text(queued), Int(0)],
        },
        HotQuery {
            name: "operations sweep (approvals)",
            sql: crate::operations::dispatch::SWEEP_OPERATIONS_SQL.into(),
            params: vec![
                Text("approved"),
                Text("dispatched"),
                Text("running"),
                Int(0),
            ],
        },
        HotQuery {
            name: "AI Pilot: failed units",
            sql: crate::operations::pilot::FAILED_UNITS_SQL.into(),
            params: vec![Int(500)],
        },
        HotQuery {
            name: "AI Pilot: full disks",
            sql: crate::operations::pilot::DISK_HIGH_SQL.into(),
            params: vec![Int(0), Int(500)],
        },
        HotQuery {
            name: "AI Pilot: backups due",
            sql: crate::operations::pilot::BACKUP_DUE_SQL.into(),
            params: vec![Int(0), Int(500)],
        },
        HotQuery {
            name: "batched poll: open commands of two agents",
            sql: crate::commands::pending_sql(2),
            params: vec![Text(queued), Text(delivered), Text("agt_0"), Text("agt_1")],
        },
        HotQuery {
            name: "batched results: two commands with their targets",
            sql: crate::commands::finishing_sql(2),
            params: vec![Text("cmd_0"), Text("cmd_1")],
        },
        HotQuery {
            name: "safe delete: servers due for purging",
            sql: crate::agents::deletion::DUE_SQL.into(),
            params: vec![Int(0)],
        },
        HotQuery {
            name: "servers list: labels",
            sql: crate::operations::settings::LABELS_SQL.into(),
            params: vec![Int(1)],
        },
        HotQuery {
            name: "servers list",
            sql: crate::agents::fleet::view_query(""),
            params: vec![Int(1), Int(0)],
        },
    ]
}
