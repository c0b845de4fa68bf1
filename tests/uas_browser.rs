//! The UAS web page in a real browser: headless Chromium driven through
//! chromedriver's W3C WebDriver HTTP API (with the UAS's own small HTTP client; no
//! WebDriver crate). A person's path: log in, see the micronets, change an ETR, see
//! the dry-run result, submit, see the new mapping; then split a micronet.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them the test fails and says so: it never passes silently.

mod uas_common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ivip::sign::KeyPair;
use ivip::uas::upstream::HttpClient;
use serde_json::{Value, json};
use uas_common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long any one wait for the page may take.
const WAIT: Duration = Duration::from_secs(20);

struct Driver {
    proc_: Child,
    http: HttpClient,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self
            .http
            .request("DELETE", &format!("/session/{}", self.session), &[], b"");
        let _ = self.proc_.kill();
        let _ = self.proc_.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        for (path, pkg) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} not found: install the Debian package `{pkg}` (apt-get install chromium chromium-driver; .ci/run does this)"
            );
        }
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let proc_ = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http =
            HttpClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).unwrap();
        let deadline = Instant::now() + WAIT;
        while http.request("GET", "/status", &[], b"").is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"]
            }
        }}});
        let a = http
            .request(
                "POST",
                "/session",
                &[("Content-Type", "application/json")],
                caps.to_string().as_bytes(),
            )
            .unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        Driver {
            proc_,
            http,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.try_call(method, path, &body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn try_call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let b = if method == "GET" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let a = self
            .http
            .request(
                method,
                &format!("/session/{}{path}", self.session),
                &[("Content-Type", "application/json")],
                &b,
            )
            .unwrap();
        (a.status, serde_json::from_slice(&a.body).unwrap())
    }

    /// Do `steps` on the element `css`, finding it again when the page re-rendered
    /// it in between (a stale element), within the wait bound. Returns the last
    /// step's value.
    fn on_element(&self, css: &str, steps: &[(&str, &str, Value)]) -> Value {
        let deadline = Instant::now() + WAIT;
        'again: loop {
            let e = self.find(css);
            let mut last = Value::Null;
            for (method, what, body) in steps {
                let path = format!("/element/{e}{what}");
                let (status, v) = self.try_call(method, &path, body);
                if status != 200 {
                    let stale = v["value"]["error"] == "stale element reference";
                    assert!(
                        stale && Instant::now() < deadline,
                        "WebDriver {method} {path}: {v}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                    continue 'again;
                }
                last = v["value"].clone();
            }
            return last;
        }
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Find by CSS, waiting (bounded) for it to appear.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let a = self
                .http
                .request(
                    "POST",
                    &format!("/session/{}/element", self.session),
                    &[("Content-Type", "application/json")],
                    json!({"using": "css selector", "value": css})
                        .to_string()
                        .as_bytes(),
                )
                .unwrap();
            let v: Value = serde_json::from_slice(&a.body).unwrap();
            if a.status == 200 {
                return v["value"][ELEMENT].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        self.on_element(css, &[("POST", "/click", json!({}))]);
    }

    fn type_into(&self, css: &str, text: &str) {
        self.on_element(
            css,
            &[
                ("POST", "/clear", json!({})),
                ("POST", "/value", json!({ "text": text })),
            ],
        );
    }

    fn text(&self, css: &str) -> String {
        self.on_element(css, &[("GET", "/text", json!({}))])
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Wait (bounded) until the text of `css` satisfies `ok`; returns it.
    fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let t = self.text(css);
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css} still says {t:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.call("GET", "/screenshot", json!({}));
        if let Some(png) = b64.as_str().and_then(ivip::uas::auth::base64_decode) {
            let _ = std::fs::write(path, png);
        }
    }
}

#[test]
fn a_person_logs_in_changes_an_etr_and_sees_the_new_mapping() {
    let started = Instant::now();
    let dir = tmp("browser");
    let z = KeyPair::from_seed(&[0x5a; 32]);
    let ruas = RuasStandin::start(
        "20.0.0.0/14",
        vec![child("uas-z", &z, &["20.1.2.0+512"])],
        vec![
            mn("20.1.2.0", 16, "11.0.0.1"),
            mn("20.1.2.16", 16, "0.0.0.0"),
        ],
    );
    let leaf = Node::start(
        &dir,
        "uas-z",
        &z,
        &format!(
            r#"
name = "uas-z"
key_file = "{{KEY_FILE}}"
listen = "127.0.0.1:0"
audit_dir = "{{AUDIT}}"
mabs = ["20.0.0.0/14"]
[parent]
url = "{url}"
public_key = "{pk}"
[[users]]
name = "alice"
uab = ["20.1.2.0+256"]
password_hash = "{h}"
"#,
            url = ruas.url,
            pk = hex(&ruas.key.public()),
            h = cheap_hash("alice-pw")
        ),
    );
    let d = Driver::start();
    d.goto(&format!("{}/", leaf.url));

    // A wrong password is refused on the page.
    d.type_into("#user", "alice");
    d.type_into("#password", "wrong");
    d.click("#login-button");
    d.wait_text("#login-error", |t| t.contains("unauthorized"));

    // Log in and see the micronets.
    d.type_into("#password", "alice-pw");
    d.click("#login-button");
    d.wait_text(r#"tr[data-range="20.1.2.0+16"] td.etr"#, |t| {
        t == "11.0.0.1"
    });
    assert_eq!(d.text("#whoami"), "logged in as alice");

    // Change an ETR: into the set, dry run first (submit is disabled until then).
    d.type_into(
        r#"tr[data-range="20.1.2.0+16"] input.etr-input"#,
        "11.0.0.42",
    );
    d.click(r#"tr[data-range="20.1.2.0+16"] button.set-etr"#);
    assert_eq!(
        d.text("#pending li"),
        "set-etr 20.1.2.0+16 11.0.0.42 remove"
    );
    assert_eq!(
        d.script("return document.getElementById('submit').disabled"),
        json!(true)
    );
    d.click("#dry-run");
    let r = d.wait_text("#result", |t| t.starts_with("dry_run_ok"));
    assert!(r.contains("20.1.2.0+16 -> 11.0.0.42"), "{r}");
    assert_eq!(ruas.posts(), 0, "the dry run sent nothing");
    d.screenshot(&dir.join("dry-run.png"));
    d.click("#submit");
    d.wait_text("#result", |t| t.starts_with("accepted"));
    d.wait_text(r#"tr[data-range="20.1.2.0+16"] td.etr"#, |t| {
        t == "11.0.0.42"
    });
    assert!(ruas.micronets().contains(&mn("20.1.2.0", 16, "11.0.0.42")));

    // A disallowed ETR: the dry run shows why and nothing is sent.
    d.type_into(
        r#"tr[data-range="20.1.2.0+16"] input.etr-input"#,
        "10.1.1.1",
    );
    d.click(r#"tr[data-range="20.1.2.0+16"] button.set-etr"#);
    d.click("#dry-run");
    d.wait_text("#result", |t| t.contains("bad_etr"));
    d.click("#clear");

    // Split the zero-mapped micronet.
    d.type_into(r#"tr[data-range="20.1.2.16+16"] input.split-at"#, "4");
    d.click(r#"tr[data-range="20.1.2.16+16"] button.split"#);
    d.click("#dry-run");
    d.wait_text("#result", |t| t.starts_with("dry_run_ok"));
    d.click("#submit");
    d.wait_text(r#"tr[data-range="20.1.2.20+12"] td.etr"#, |t| {
        t == "0.0.0.0"
    });
    d.screenshot(&dir.join("after.png"));
    assert_eq!(ruas.state.lock().accepted.len(), 2);
    eprintln!(
        "browser test took {:.1} s (screenshots in {})",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
}
