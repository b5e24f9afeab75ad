#![recursion_limit = "512"]
//! The Pilothouse dashboard: routes, pages, components and server functions.
//!
//! Pages render on the server (async SSR, so redirects and status codes are
//! decided before the first byte) and hydrate in the browser. Every form is an
//! `ActionForm`, so it also works without JavaScript.

pub mod agent_update;
pub mod api;
pub mod audit_page;
mod chart;
#[cfg(feature = "ssr")]
pub mod context;
mod dashboard;
mod error;
mod forwarding_page;
pub mod mfa_page;
pub mod notices_page;
mod notifications_page;
mod operations;
pub mod ops_api;
mod pages;
pub mod password_page;
pub mod reset_page;
mod secrets_page;
mod server_admin;
mod servers;
pub mod sso_page;
mod ui;

pub use error::AppError;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{ParentRoute, Route, Router, Routes};
use leptos_router::{path, SsrMode};

/// The HTML document around the app (server only).
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(parts) = use_context::<axum::http::request::Parts>() {
        if let Some(nonce) = parts.extensions.get::<context::CspNonce>() {
            provide_context(leptos::nonce::Nonce::from_value(nonce.0.clone()));
        }
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body class="min-h-screen bg-slate-50 text-slate-900 antialiased">
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    #[cfg(feature = "hydrate")]
    Effect::new(|_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Stylesheet id="leptos" href="/pkg/pilothouse.css" />
        <Title text="Pilothouse" />
        <Router>
            <Routes fallback=pages::NotFound>
                <Route path=path!("/login") view=pages::LoginPage ssr=SsrMode::Async />
                <Route path=path!("/login/code") view=mfa_page::CodePage ssr=SsrMode::Async />
                <Route path=path!("/setup") view=pages::SetupPage ssr=SsrMode::Async />
                <Route path=path!("/forgot-password") view=reset_page::ForgotPage ssr=SsrMode::Async />
                <Route path=path!("/not-me/:token") view=notices_page::NotMePage ssr=SsrMode::Async />
                <Route path=path!("/reset-password/:token") view=reset_page::ResetPage ssr=SsrMode::Async />
                <Route path=path!("/invite/:token") view=pages::InvitePage ssr=SsrMode::Async />
                <ParentRoute path=path!("") view=ui::Shell ssr=SsrMode::Async>
                    <Route path=path!("") view=dashboard::Dashboard />
                    <Route path=path!("servers") view=servers::Servers />
                    <Route path=path!("servers/:id") view=servers::ServerDetail />
                    <Route path=path!("approvals") view=operations::Approvals />
                    <Route path=path!("operations/:id") view=operations::OperationDetail />
                    <Route path=path!("audit") view=audit_page::AuditLog />
                    <Route path=path!("audit/:seq") view=audit_page::AuditEventPage />
                    <Route path=path!("team") view=pages::Team />
                    <Route path=path!("settings") view=pages::Settings />
                </ParentRoute>
            </Routes>
        </Router>
    }
}
