//! Spawns the real server on port 0 with a fresh database and gives tests a
//! cookie-keeping HTTP client per person.

#![allow(dead_code, clippy::unwrap_used)]

pub mod agent_tls;
pub mod github;
pub mod https_hook;
pub mod machine;
pub mod oidc;
pub mod smtp;
pub mod tls;

use control::accounts;
use control::testing::TestDb;
use control::{OrgId, Role, Timestamp, UserId};
use reqwest::redirect::Policy;
use secrecy::SecretString;
use server::{Application, Config, Overrides};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub addr: String,
    /// The agent gateway's TLS address.
    pub agent_addr: std::net::SocketAddr,
    pub ca_pin: String,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(db: TestDb) -> TestApp {
        TestApp::spawn_with(db, |_| {}).await
    }

    /// Like [`TestApp::spawn`], with a chance to change the configuration.
    pub async fn spawn_with(db: TestDb, configure: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(
            None,
            Overrides {
                data_dir: Some(dir.path().to_path_buf()),
                database_url: Some(db.url.clone()),
                listen: Some("127.0.0.1:0".parse().unwrap()),
                agent_listen: Some("127.0.0.1:0".parse().unwrap()),
            },
        )
        .unwrap();
        configure(&mut config);
        let app = Application::build(config).await.expect("the server starts");
        let addr = format!("http://127.0.0.1:{}", app.port());
        let agent_addr = app.agent_addr();
        let ca_pin = app.ca_pin().to_string();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            addr,
            agent_addr,
            ca_pin,
            db,
            dir,
        }
    }

    /// The server's own keys, read as the server reads them: from the
    /// database, under the master key in its data directory.
    pub async fn control_keys(&self) -> control::key_vault::ControlKeys {
        let ring = control::key_vault::open_ring(
            &self.db.store,
            &control::secrets::MasterKeySource::File(self.dir.path().join("master.key")),
        )
        .await
        .unwrap();
        control::key_vault::load_all(&self.db.store, &ring, self.dir.path(), Timestamp::now())
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    /// A browser-like client: keeps cookies, does not follow redirects.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap()
    }

    pub async fn add_user(&self, org: &str, email: &str, role: Role) -> (UserId, OrgId) {
        accounts::add_user_cli(
            &control::access::Operator::command_line(self.db.store.clone()),
            org,
            email,
            role,
            SecretString::from(PASSWORD),
            Timestamp::now(),
        )
        .await
        .unwrap()
    }

    /// Loads a page as a browser does (asking for HTML).
    pub async fn page(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client
            .get(self.url(path))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
    }

    /// Calls a server function with form fields.
    pub async fn call(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        client
            .post(self.url(&format!("/api/{endpoint}")))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A client signed in as `email`.
    pub async fn signed_in(&self, email: &str) -> reqwest::Client {
        let client = self.client();
        let res = self
            .call(
                &client,
                "login",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert!(
            res.status().is_success() || res.status().is_redirection(),
            "login of {email}: {}",
            res.status()
        );
        client
    }
}

/// Where a redirect sends the browser (asserts it is one).
pub fn location(res: &reqwest::Response) -> String {
    assert!(
        res.status().is_redirection(),
        "{} {:?}",
        res.status(),
        res.headers()
    );
    res.headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// The value of `name` in `url`'s query string.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .map(String::from)
}

/// GETs `url` (a redirect is expected) and returns where it sends the browser.
pub async fn follow(client: &reqwest::Client, url: &str) -> String {
    location(&client.get(url).send().await.unwrap())
}

impl TestApp {
    /// A page's HTML as a browser gets it.
    pub async fn text(&self, client: &reqwest::Client, path: &str) -> String {
        self.page(client, path).await.text().await.unwrap()
    }

    /// `current-user` for `client`: `null` when signed out.
    pub async fn me(&self, client: &reqwest::Client) -> serde_json::Value {
        self.call(client, "current-user", &[])
            .await
            .json()
            .await
            .unwrap()
    }
}

/// An oversized body must be refused with 413. The server may answer and close
/// before the client has finished writing; then the client sees a broken pipe.
pub async fn expect_too_large(req: reqwest::RequestBuilder) {
    match req.send().await {
        Ok(res) => assert_eq!(res.status(), 413),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
}
