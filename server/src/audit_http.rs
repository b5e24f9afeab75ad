//! `GET /audit/export?format=csv|jsonl[&FILTER]`: the signed-in Owner's or
//! Admin's organisation's audit log as a download, the events the Audit
//! page's filter selects (`actor`, `group`, `server`, `operation`, `since`,
//! `until`, `text`, as its URL carries them; none: every event), oldest
//! first, streamed a page at a time (never the whole log in memory). The
//! export is recorded in the log, with its filter, the client's address and
//! browser, before any event is read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use tower_sessions::Session;

use app::context::{AppState, ClientIp, Cx};
use app::AppError;
use control::audit_export::{self, ExportAudit, ExportFilter, ExportFormat};
use control::AuditFilterText;

#[derive(Deserialize)]
pub struct ExportQuery {
    format: Option<String>,
    #[serde(flatten)]
    filter: AuditFilterText,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn app_error(e: AppError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    refuse(status, &e.to_string())
}

pub async fn export(
    State(state): State<AppState>,
    session: Session,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Query(q): Query<ExportQuery>,
) -> Response {
    let format: ExportFormat = match q.format.as_deref().unwrap_or("csv").parse() {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &format!("format: {e}.")),
    };
    let filter = match ExportFilter::parse(&q.filter) {
        Ok(f) => Arc::new(f),
        Err(e) => return app_error(e.into()),
    };
    let ip = client.map(|Extension(ClientIp(ip))| ip).unwrap_or_default();
    let cx = Cx::from_parts(state.clone(), session, ip, &headers);
    let actor = match cx.actor().await {
        Ok(a) => a,
        Err(e) => return app_error(e),
    };
    let auth = match actor.authorize::<ExportAudit>() {
        Ok(a) => a,
        Err(e) => return app_error(e.into()),
    };
    let org = auth.actor().org();
    if let Err(e) = audit_export::record_export(
        &state.store,
        &actor.audit_actor(),
        org,
        format,
        &filter,
        cx.now,
    )
    .await
    {
        return app_error(e.into());
    }
    let (content_type, ext) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::JsonLines => ("application/x-ndjson", "jsonl"),
    };
    let day = cx
        .now
        .display_utc()
        .get(..10)
        .unwrap_or("export")
        .to_string();
    let store = state.store.clone();
    let header_bytes = audit_export::export_header(format);
    // The header, then a page per poll of the body: a slow client slows the
    // reads down instead of filling memory.
    let pages = futures_util::stream::unfold(
        (Some(header_bytes), 0i64, false),
        move |(head, after, done)| {
            let store = store.clone();
            let filter = filter.clone();
            async move {
                if let Some(h) = head.filter(|h| !h.is_empty()) {
                    return Some((Ok(h), (None, after, done)));
                }
                if done {
                    return None;
                }
                match audit_export::export_page(&store, org, &filter, format, after).await {
                    Ok(Some(page)) => Some((Ok(page.bytes), (None, page.last_seq, false))),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "an audit export stopped");
                        Some((
                            Err(std::io::Error::other("the export could not be read")),
                            (None, after, true),
                        ))
                    }
                }
            }
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"audit-{}-{day}.{ext}\"", org.0),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(pages),
    )
        .into_response()
}
