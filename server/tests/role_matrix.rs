//! The role matrix: every server function and page of the dashboard, called
//! as Owner, Admin, Member, Viewer, anonymous, and as the Owner of another
//! organisation, with the outcome each must get.

// Test bodies are shared by both backends through a macro, so they are not
// `#[test]` functions themselves; a failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod helpers;

use control::testing::TestDb;
use control::Role;
use helpers::TestApp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    OtherOrg,
    Viewer,
    Member,
    Admin,
    Owner,
}

/// Enrols a server in Acme whose agent declares restarts and package installs.
async fn enrol_server(app: &TestApp) -> control::AgentId {
    use secrecy::ExposeSecret;
    let now = control::Timestamp::now();
    let store = &app.db.store;
    let token = control::agents::create_registration_token_cli(
        &control::access::Operator::command_line(store.clone()),
        "Acme",
        &app.ca_pin,
        600,
        now,
    )
    .await
    .unwrap();
    let ca = app.control_keys().await.ca;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let enrolled = control::agents::enrol(
        store,
        &ca,
        &control::throttle::MemoryThrottle::new(100, 600),
        control::agents::Enrolment {
            token: token.token.expose_secret().parse().unwrap(),
            csr_pem: csr,
            identity_key: channel::SigningKey::generate().verifying_key().clone(),
            kem_key: Some(channel::KemSecretKey::generate().public_key().clone()),
            hostname: "web-1".into(),
            agent_version: "0.1.0".into(),
        },
        &control::access::RequestMeta::new("192.0.2.1", "test"),
        now,
    )
    .await
    .unwrap();
    let session = control::agents::authenticate(store, &enrolled.cert.fingerprint, now)
        .await
        .unwrap();
    let caps = control::Capabilities {
        kinds: vec![
            control::OpKind::RestartService,
            control::OpKind::InstallPackage,
        ],
        units: vec!["nginx.service".into()],
        package_tool: Some("apt-get".into()),
        ..control::Capabilities::default()
    };
    control::operations::settings::record_capabilities(store, &session, &caps, now)
        .await
        .unwrap();
    enrolled.agent
}

const EVERYONE: [Who; 6] = [
    Who::Anonymous,
    Who::OtherOrg,
    Who::Viewer,
    Who::Member,
    Who::Admin,
    Who::Owner,
];

async fn role_matrix(db: TestDb) {
    let app = TestApp::spawn(db).await;
    let (_, acme) = app.add_user("Acme", "owner@example.com", Role::Owner).await;
    app.add_user("Acme", "admin@example.com", Role::Admin).await;
    app.add_user("Acme", "member@example.com", Role::Member)
        .await;
    app.add_user("Acme", "viewer@example.com", Role::Viewer)
        .await;
    let (target, _) = app
        .add_user("Acme", "target@example.com", Role::Member)
        .await;
    let (gone_a, _) = app
        .add_user("Acme", "gone-a@example.com", Role::Member)
        .await;
    let (gone_o, _) = app
        .add_user("Acme", "gone-o@example.com", Role::Member)
        .await;
    app.add_user("Globex", "stranger@example.com", Role::Owner)
        .await;
    app.add_user("Acme", "proposer@example.com", Role::Member)
        .await;

    let mut clients = Vec::new();
    for who in EVERYONE {
        let client = match who {
            Who::Anonymous => app.client(),
            Who::OtherOrg => app.signed_in("stranger@example.com").await,
            Who::Viewer => app.signed_in("viewer@example.com").await,
            Who::Member => app.signed_in("member@example.com").await,
            Who::Admin => app.signed_in("admin@example.com").await,
            Who::Owner => app.signed_in("owner@example.com").await,
        };
        clients.push((who, client));
    }

    // Pages: members see them, anonymous visitors are sent to /login.
    for path in [
        "/",
        "/servers",
        "/approvals",
        "/audit",
        "/team",
        "/settings",
    ] {
        for (who, c) in &clients {
            let res = app.page(c, path).await;
            let expected = if *who == Who::Anonymous { 302 } else { 200 };
            assert_eq!(res.status(), expected, "GET {path} as {who:?}");
            if *who == Who::OtherOrg {
                let html = res.text().await.unwrap();
                assert!(
                    !html.contains("owner@example.com") && !html.contains("Acme"),
                    "GET {path} as {who:?} leaks Acme"
                );
            }
        }
    }
    // The team page offers management only to Owners and Admins.
    for (who, c) in &clients {
        let html = app.page(c, "/team").await.text().await.unwrap();
        let manages = html.contains("Send invitation") || html.contains("Change role");
        let expected = matches!(who, Who::Admin | Who::Owner | Who::OtherOrg);
        assert_eq!(manages, expected, "management controls on /team as {who:?}");
    }

    let target_id = target.0.to_string();
    let acme_id = acme.0.to_string();
    // Reads: any member 200, anonymous 401; the other org only ever sees its own data.
    for (endpoint, form) in [
        ("team", vec![]),
        ("audit-summary", vec![]),
        ("audit-search", vec![]),
        (
            "audit-search",
            vec![("group", "servers"), ("text", "agent")],
        ),
        ("my-sessions", vec![]),
        ("fleet-summary", vec![]),
        ("latest-audit-events", vec![("limit", "5")]),
        ("recent-operations", vec![("limit", "5")]),
        ("pending-operations", vec![]),
        ("pending-count", vec![]),
        ("audit-destinations", vec![]),
        ("notification-channels", vec![]),
    ] {
        for (who, c) in &clients {
            let res = app.call(c, endpoint, &form).await;
            let expected = if *who == Who::Anonymous { 401 } else { 200 };
            assert_eq!(res.status(), expected, "{endpoint} as {who:?}");
            let body = res.text().await.unwrap();
            if *who == Who::OtherOrg {
                assert!(
                    !body.contains("owner@example.com"),
                    "{endpoint} as {who:?} leaks Acme: {body}"
                );
            }
        }
    }
    for (who, c) in &clients {
        let res = app.call(c, "current-user", &[]).await;
        assert_eq!(res.status(), 200, "current-user as {who:?}");
        let body = res.text().await.unwrap();
        assert_eq!(
            body == "null",
            *who == Who::Anonymous,
            "current-user as {who:?}: {body}"
        );
        let res = app.call(c, "setup-state", &[]).await;
        assert_eq!(res.text().await.unwrap(), "\"Done\"");
    }

    // Audit forwarding and notification channels: Owners and Admins add and
    // remove them; the others are refused, and another organisation's Owner
    // finds none of Acme's.
    managed_by_owners_and_admins(
        &app,
        &clients,
        (
            "add-audit-destination",
            "audit-destinations",
            "remove-audit-destination",
        ),
        |name| {
            vec![
                ("kind", "syslog".to_string()),
                ("name", name),
                ("address", "siem.example.com:6514".to_string()),
            ]
        },
    )
    .await;
    managed_by_owners_and_admins(
        &app,
        &clients,
        (
            "add-notification-channel",
            "notification-channels",
            "remove-notification-channel",
        ),
        |name| {
            vec![
                ("kind", "email".to_string()),
                ("name", name),
                ("address", "security@example.com".to_string()),
            ]
        },
    )
    .await;
    let owner_c = &clients.iter().find(|(w, _)| *w == Who::Owner).unwrap().1;

    // Operations: propose, approve and reject (medium and high risk), cancel
    // someone else's, Production Protection, delete and restore. The other
    // org's Owner never finds Acme's server or operations.
    let server = enrol_server(&app).await;
    let proposer = app.signed_in("proposer@example.com").await;
    let restart = ("restart_service", r#"{"unit":"nginx.service"}"#);
    let install = ("install_package", r#"{"name":"curl"}"#);
    let propose = |(kind, args): (&'static str, &'static str)| {
        let (app, proposer, server) = (&app, &proposer, &server);
        async move {
            let res = app
                .call(
                    proposer,
                    "propose-operation",
                    &[
                        ("targets", &server.0),
                        ("kind", kind),
                        ("args", args),
                        ("reason", "r"),
                    ],
                )
                .await;
            assert_eq!(res.status(), 200);
            res.json::<String>().await.unwrap()
        }
    };
    let outcome = |who: Who, allowed: &[Who]| match who {
        Who::Anonymous => 401,
        Who::OtherOrg => 404,
        w if allowed.contains(&w) => 200,
        _ => 403,
    };
    let members_up = [Who::Member, Who::Admin, Who::Owner];
    let admins = [Who::Admin, Who::Owner];
    for (who, c) in &clients {
        let (kind, args) = restart;
        let res = app
            .call(
                c,
                "propose-operation",
                &[
                    ("targets", &server.0),
                    ("kind", kind),
                    ("args", args),
                    ("reason", "r"),
                ],
            )
            .await;
        assert_eq!(
            res.status(),
            outcome(*who, &members_up),
            "propose as {who:?}"
        );
        for (endpoint, plan, allowed) in [
            ("approve-operation", restart, &members_up[..]),
            ("reject-operation", restart, &members_up[..]),
            ("approve-operation", install, &admins[..]),
            ("reject-operation", install, &admins[..]),
            ("cancel-operation", restart, &admins[..]),
        ] {
            let id = propose(plan).await;
            let res = app
                .call(c, endpoint, &[("id", &id), ("reason", "because")])
                .await;
            assert_eq!(
                res.status(),
                outcome(*who, allowed),
                "{endpoint} {} as {who:?}",
                plan.0
            );
        }
        for on in ["true", "false"] {
            let res = app
                .call(c, "set-production", &[("id", &server.0), ("on", on)])
                .await;
            assert_eq!(
                res.status(),
                outcome(*who, &admins),
                "set-production as {who:?}"
            );
        }
        let res = app
            .call(c, "delete-server", &[("id", &server.0), ("name", "web-1")])
            .await;
        assert_eq!(
            res.status(),
            outcome(*who, &admins),
            "delete-server as {who:?}"
        );
        let res = app.call(c, "restore-server", &[("id", &server.0)]).await;
        assert_eq!(
            res.status(),
            outcome(*who, &admins),
            "restore-server as {who:?}"
        );
    }

    // Writes. Each row: endpoint, form for a given caller, who may do it, and
    // what the other org's Owner gets (their role allows it, but not here).
    for (who, c) in &clients {
        let email = format!("invitee-{who:?}@example.com").to_lowercase();
        let res = app
            .call(c, "invite-member", &[("email", &email), ("role", "member")])
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            // The stranger invites into their own organisation; Acme is untouched.
            Who::OtherOrg | Who::Admin | Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "invite-member as {who:?}");
        let owner_invite = app
            .call(
                c,
                "invite-member",
                &[("email", "boss@example.com"), ("role", "owner")],
            )
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member | Who::Admin => 403,
            Who::OtherOrg | Who::Owner => 200,
        };
        assert_eq!(
            owner_invite.status(),
            expected,
            "invite an owner as {who:?}"
        );
    }

    for (who, c) in &clients {
        let res = app
            .call(
                c,
                "change-role",
                &[("user_id", &target_id), ("role", "viewer")],
            )
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg => 404,
            Who::Admin | Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "change-role as {who:?}");
        let res = app
            .call(
                c,
                "change-role",
                &[("user_id", &target_id), ("role", "owner")],
            )
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member | Who::Admin => 403,
            Who::OtherOrg => 404,
            Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "promote to owner as {who:?}");
        if *who == Who::Owner {
            let res = app
                .call(
                    c,
                    "change-role",
                    &[("user_id", &target_id), ("role", "member")],
                )
                .await;
            assert_eq!(res.status(), 200);
        }
    }

    for (who, c) in &clients {
        let victim = match who {
            Who::Owner => gone_o.0.to_string(),
            _ => gone_a.0.to_string(),
        };
        let res = app.call(c, "remove-member", &[("user_id", &victim)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg => 404,
            Who::Admin | Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "remove-member as {who:?}");
    }

    // Revoking Acme's pending invitations.
    let team: serde_json::Value = app.call(owner_c, "team", &[]).await.json().await.unwrap();
    let invites: Vec<i64> = team["invites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["role"] == "member")
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(invites.len(), 2, "{team}");
    for (who, c) in &clients {
        let id = if *who == Who::Owner {
            invites[1]
        } else {
            invites[0]
        }
        .to_string();
        let res = app.call(c, "revoke-invite", &[("id", &id)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg => 404,
            Who::Admin | Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "revoke-invite as {who:?}");
    }

    for (who, c) in &clients {
        let res = app.call(c, "switch-org", &[("org", &acme_id)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::OtherOrg => 404,
            _ => 200,
        };
        assert_eq!(res.status(), expected, "switch-org as {who:?}");
        let res = app.call(c, "sign-out-others", &[]).await;
        let expected = if *who == Who::Anonymous { 401 } else { 200 };
        assert_eq!(res.status(), expected, "sign-out-others as {who:?}");
        // Two-factor and password: each person's own; the organisation's
        // requirement is an Owner's (409 here: it is already off).
        let res = app.call(c, "mfa-status", &[]).await;
        let expected = if *who == Who::Anonymous { 401 } else { 200 };
        assert_eq!(res.status(), expected, "mfa-status as {who:?}");
        let res = app.call(c, "mfa-require", &[("on", "false")]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member | Who::Admin => 403,
            Who::OtherOrg | Who::Owner => 409,
        };
        assert_eq!(res.status(), expected, "mfa-require as {who:?}");
        // Single sign-on: reading the organisation's settings is anyone's,
        // changing them an Owner's (409 here: no provider is configured,
        // and the domain checks come after the role).
        for endpoint in ["sso-requirement", "join-domains", "sign-in-methods"] {
            let res = app.call(c, endpoint, &[]).await;
            let expected = if *who == Who::Anonymous { 401 } else { 200 };
            assert_eq!(res.status(), expected, "{endpoint} as {who:?}");
        }
        let res = app.call(c, "set-sso-required", &[("on", "true")]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member | Who::Admin => 403,
            Who::OtherOrg | Who::Owner => 409,
        };
        assert_eq!(res.status(), expected, "set-sso-required as {who:?}");
        let res = app
            .call(c, "remove-join-domain", &[("domain", "nowhere.example")])
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member | Who::Admin => 403,
            Who::OtherOrg | Who::Owner => 404,
        };
        assert_eq!(res.status(), expected, "remove-join-domain as {who:?}");
        let res = app
            .call(c, "unlink-identity", &[("provider", "oidc")])
            .await;
        let expected = if *who == Who::Anonymous { 401 } else { 404 };
        assert_eq!(res.status(), expected, "unlink-identity as {who:?}");
        let res = app
            .call(
                c,
                "change-password",
                &[
                    ("current", "not the password"),
                    ("new_password", "a perfectly fine new passphrase"),
                    ("repeat", "a perfectly fine new passphrase"),
                ],
            )
            .await;
        let expected = if *who == Who::Anonymous { 401 } else { 400 };
        assert_eq!(res.status(), expected, "change-password as {who:?}");
        let res = app
            .call(
                c,
                "complete-setup",
                &[
                    ("code", "x"),
                    ("org_name", "Evil"),
                    ("email", "e@example.com"),
                    ("password", "correct horse battery staple"),
                ],
            )
            .await;
        assert_eq!(res.status(), 409, "complete-setup as {who:?}");
        let res = app
            .call(
                c,
                "accept-invite",
                &[
                    ("token", "not-a-token"),
                    ("password", "correct horse battery staple"),
                ],
            )
            .await;
        assert_eq!(
            res.status(),
            404,
            "accept-invite with a bad token as {who:?}"
        );
        // Password reset: open to anyone; not set up here (no SMTP), and a
        // bad link is not found for anyone.
        let res = app.call(c, "password-reset-available", &[]).await;
        assert!(!res.json::<bool>().await.unwrap(), "as {who:?}");
        let res = app
            .call(
                c,
                "request-password-reset",
                &[("email", "owner@example.com")],
            )
            .await;
        assert_eq!(res.status(), 409, "request-password-reset as {who:?}");
        let res = app
            .call(
                c,
                "reset-password",
                &[
                    ("token", "not-a-token"),
                    ("new_password", "a perfectly fine new passphrase"),
                    ("repeat", "a perfectly fine new passphrase"),
                ],
            )
            .await;
        assert_eq!(res.status(), 404, "reset-password as {who:?}");
        let res = app
            .call(c, "invite-details", &[("token", "not-a-token")])
            .await;
        assert_eq!(
            res.status(),
            404,
            "invite-details with a bad token as {who:?}"
        );
    }

    // Servers: enrol two agents in Acme directly through the control plane.
    let ca = app.control_keys().await.ca;
    let mut servers = Vec::new();
    for _ in 0..2 {
        let token = control::agents::create_registration_token_cli(
            &control::access::Operator::command_line(app.db.store.clone()),
            "Acme",
            &ca.pin(),
            600,
            control::Timestamp::now(),
        )
        .await
        .unwrap();
        let token: channel::token::RegistrationToken =
            secrecy::ExposeSecret::expose_secret(&token.token)
                .parse()
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let enrolled = control::agents::enrol(
            &app.db.store,
            &ca,
            &control::throttle::MemoryThrottle::new(10, 60),
            control::agents::Enrolment {
                token,
                csr_pem: csr,
                identity_key: channel::SigningKey::generate().verifying_key().clone(),
                kem_key: None,
                hostname: "web".into(),
                agent_version: "0.1.0".into(),
            },
            &control::access::RequestMeta::default(),
            control::Timestamp::now(),
        )
        .await
        .unwrap();
        servers.push(enrolled.agent.0);
    }
    for (who, c) in &clients {
        let res = app.call(c, "list-servers", &[]).await;
        let expected = if *who == Who::Anonymous { 401 } else { 200 };
        assert_eq!(res.status(), expected, "list-servers as {who:?}");
        if *who == Who::OtherOrg {
            assert_eq!(
                res.text().await.unwrap(),
                "[]",
                "the other org sees none of Acme's servers"
            );
        }
        let res = app.call(c, "server-detail", &[("id", &servers[0])]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::OtherOrg => 404,
            _ => 200,
        };
        assert_eq!(res.status(), expected, "server-detail as {who:?}");
        let res = app
            .call(
                c,
                "server-metrics",
                &[("id", &servers[1]), ("range", "hour")],
            )
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::OtherOrg => 404,
            _ => 200,
        };
        assert_eq!(res.status(), expected, "server-metrics as {who:?}");
        let res = app.call(c, "recent-commands", &[("id", &servers[1])]).await;
        let expected = if *who == Who::Anonymous { 401 } else { 200 };
        assert_eq!(res.status(), expected, "recent-commands as {who:?}");
        if *who == Who::OtherOrg {
            assert_eq!(
                res.text().await.unwrap(),
                "[]",
                "another org sees none of Acme's commands"
            );
        }
        let res = app.call(c, "create-registration-token", &[]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg | Who::Admin | Who::Owner => 200,
        };
        assert_eq!(
            res.status(),
            expected,
            "create-registration-token as {who:?}"
        );
        if expected == 200 {
            let body = res.text().await.unwrap();
            assert!(
                body.contains("pilothouse-agent register --server https://"),
                "{body}"
            );
        }
        // Registration tokens: listed and revoked by Owners and Admins only,
        // each in their own organisation.
        let res = app.call(c, "registration-tokens", &[]).await;
        assert_eq!(res.status(), expected, "registration-tokens as {who:?}");
        let missing = app
            .call(c, "revoke-registration-token", &[("id", "999999")])
            .await;
        let refused = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg | Who::Admin | Who::Owner => 404,
        };
        assert_eq!(
            missing.status(),
            refused,
            "revoke-registration-token as {who:?}"
        );
        if expected == 200 {
            let tokens: Vec<control::RegistrationTokenView> = res.json().await.unwrap();
            let active = tokens
                .iter()
                .find(|t| t.state == control::TokenState::Active)
                .expect("the token created above");
            let res = app
                .call(
                    c,
                    "revoke-registration-token",
                    &[("id", &active.id.to_string())],
                )
                .await;
            assert_eq!(res.status(), 200, "revoke own token as {who:?}");
            if *who == Who::OtherOrg {
                assert!(tokens.len() == 1, "another org lists only its own tokens");
            }
        }
        // The Admin revokes the first server below; the Owner works on the second.
        let target = if *who == Who::Owner {
            &servers[1]
        } else {
            &servers[0]
        };
        let res = app.call(c, "ping-server", &[("id", target)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg => 404,
            Who::Admin | Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "ping-server as {who:?}");
        if expected == 200 {
            let command: String = res.json().await.unwrap();
            for (other, oc) in &clients {
                let res = app.call(oc, "command-state", &[("id", &command)]).await;
                let expected = match other {
                    Who::Anonymous => 401,
                    Who::OtherOrg => 404,
                    _ => 200,
                };
                assert_eq!(res.status(), expected, "command-state as {other:?}");
            }
        }
        let own_target = if *who == Who::Owner {
            &servers[1]
        } else {
            &servers[0]
        };
        for endpoint in ["activate-pqc", "rotate-keys"] {
            let res = app.call(c, endpoint, &[("id", own_target)]).await;
            let expected = match who {
                Who::Anonymous => 401,
                Who::Viewer | Who::Member => 403,
                Who::OtherOrg => 404,
                Who::Admin | Who::Owner => 200,
            };
            assert_eq!(res.status(), expected, "{endpoint} as {who:?}");
        }
        // Update agent: past the role check, this control plane holds no
        // release to offer (409).
        let res = app.call(c, "update-agent", &[("id", own_target)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg => 404,
            Who::Admin | Who::Owner => 409,
        };
        assert_eq!(res.status(), expected, "update-agent as {who:?}");
        // The same on a selection; another organisation's admin passes the
        // role check too, and would find the servers skipped as not found.
        let res = app
            .call(c, "update-agents", &[("ids[0]", own_target.as_str())])
            .await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg | Who::Admin | Who::Owner => 409,
        };
        assert_eq!(res.status(), expected, "update-agents as {who:?}");
        let res = app.call(c, "agent-release", &[("id", own_target)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::OtherOrg => 404,
            _ => 200,
        };
        assert_eq!(res.status(), expected, "agent-release as {who:?}");
        let victim = if *who == Who::Owner {
            &servers[1]
        } else {
            &servers[0]
        };
        let res = app.call(c, "revoke-server", &[("id", victim)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            Who::OtherOrg => 404,
            Who::Admin | Who::Owner => 200,
        };
        assert_eq!(res.status(), expected, "revoke-server as {who:?}");
    }

    // Nothing the refused callers tried reached Acme's audit chain, and it is intact.
    let audit = app
        .call(owner_c, "latest-audit-events", &[("limit", "100")])
        .await
        .text()
        .await
        .unwrap();
    assert!(!audit.contains("stranger@example.com"), "{audit}");
    let chain = app
        .call(owner_c, "audit-summary", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(chain.contains("\"first_broken_seq\":null"), "{chain}");

    for (who, c) in &clients {
        let res = app.call(c, "logout", &[]).await;
        assert_eq!(res.status(), 200, "logout as {who:?}");
        assert_eq!(
            app.call(c, "team", &[]).await.status(),
            401,
            "signed out as {who:?}"
        );
    }
}

/// Everyone tries to add one (named after them), list, and remove Acme's
/// first: only Owners and Admins may add and remove; another organisation's
/// Owner does not find it. `endpoints`: (add, list, remove).
async fn managed_by_owners_and_admins(
    app: &TestApp,
    clients: &[(Who, reqwest::Client)],
    (add, list, remove): (&str, &str, &str),
    form: impl Fn(String) -> Vec<(&'static str, String)>,
) {
    for (who, c) in clients {
        let fields = form(format!("added by {who:?}"));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = app.call(c, add, &fields).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::Viewer | Who::Member => 403,
            _ => 200,
        };
        assert_eq!(res.status(), expected, "{add} as {who:?}");
    }
    let owner_c = &clients.iter().find(|(w, _)| *w == Who::Owner).unwrap().1;
    let listed: Vec<serde_json::Value> = app.call(owner_c, list, &[]).await.json().await.unwrap();
    assert_eq!(
        listed.len(),
        2,
        "{list}: Acme's, the Admin's and the Owner's"
    );
    let first = listed[0]["id"].as_str().unwrap().to_string();
    for (who, c) in clients {
        if *who == Who::Owner || *who == Who::Admin {
            continue;
        }
        let res = app.call(c, remove, &[("id", &first)]).await;
        let expected = match who {
            Who::Anonymous => 401,
            Who::OtherOrg => 404,
            _ => 403,
        };
        assert_eq!(res.status(), expected, "{remove} as {who:?}");
    }
    let res = app.call(owner_c, remove, &[("id", &first)]).await;
    assert_eq!(res.status(), 200, "{remove} as the Owner");
}

control::both_backends!(role_matrix);
