//! The web view in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) with fantoccini. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them); `CHROMIUM` and `CHROMEDRIVER`
//! name other binaries. Writes a screenshot to `target/web-view.png`.

mod common;

use common::*;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn binary(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install Chromium and its driver (apt-get install -y chromium chromium-driver) or set {var}"
    );
    path
}

/// A chromedriver process on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let exe = binary("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
        wait_until("chromedriver to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = binary("CHROMIUM", "/usr/bin/chromium");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else { unreachable!() };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a browser session")
}

fn file(path: &str) -> String {
    format!("li.file[data-path=\"{path}\"]")
}

/// Waits for an element, up to `within`.
async fn find_within(b: &Client, css: &str, within: Duration) -> Result<fantoccini::elements::Element, String> {
    let start = Instant::now();
    loop {
        match b.find(Locator::Css(css)).await {
            Ok(e) => return Ok(e),
            Err(e) if start.elapsed() > within => return Err(format!("{css} not there after {within:?}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn find(b: &Client, css: &str) -> fantoccini::elements::Element {
    find_within(b, css, DEADLINE).await.unwrap()
}

async fn text_of(b: &Client, css: &str) -> String {
    find(b, css).await.text().await.unwrap()
}

async fn gone(b: &Client, css: &str) {
    let start = Instant::now();
    while b.find(Locator::Css(css)).await.is_ok() {
        assert!(start.elapsed() < DEADLINE, "{css} is still shown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn text_becomes(b: &Client, css: &str, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = match b.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if want(&text) {
            return text;
        }
        assert!(start.elapsed() < DEADLINE, "{css} still reads {text:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Accepts the confirmation dialog the page opens.
async fn confirm(b: &Client) {
    let start = Instant::now();
    loop {
        match b.accept_alert().await {
            Ok(()) => return,
            Err(CmdError::Standard(_)) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("no confirmation dialog: {e}"),
        }
    }
}

/// In the open editor: replaces the body with `text`, saves, confirms.
async fn save_edit(b: &Client, text: &str) {
    let body = find(b, "#editor-body").await;
    body.clear().await.unwrap();
    body.send_keys(text).await.unwrap();
    find(b, "#editor-save").await.click().await.unwrap();
    confirm(b).await;
}

/// Waits until the protocol reads `body` at `path`.
async fn stored(c: &doozer_client::Client, path: &str, body: &str) {
    eventually(&format!("{body:?} to be stored at {path}"), || async {
        c.get(path, None).await.unwrap().0 == body.as_bytes()
    })
    .await;
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("web-view.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_tree_live_edits_it_and_survives_a_restart() {
    let mut d = Doozerd::start(&["-w", "127.0.0.1:0"]);
    let web = d.web.clone().unwrap();
    let c = client(&d.addr).await;
    let r1 = c.set("/message", 0, "hello, world\n").await.unwrap();
    c.set("/config/db/primary", 0, "10.0.0.5:5432").await.unwrap();
    c.set("/config/db/replicas", 0, "10.0.0.6:5432\n10.0.0.7:5432").await.unwrap();
    c.set("/config/blob", 0, vec![0u8, 159, 146, 150, 255, 1, 2, 3]).await.unwrap();
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let b = browser(&driver, profile.path()).await;
    b.goto(&format!("http://{web}/")).await.unwrap();

    // /message with its body and revision.
    let m = file("/message");
    assert_eq!(text_of(&b, &format!("{m} pre.body")).await.trim_end(), "hello, world");
    assert_eq!(text_of(&b, &format!("{m} .file-rev")).await, r1.to_string());
    assert!(text_of(&b, &format!("{} pre.body", file("/config/blob")))
        .await
        .starts_with("binary, 8 bytes: 00 9f 92 96 ff"));
    text_becomes(&b, "#status", |t| t == "live").await;
    text_becomes(&b, "#members tbody", |t| t.contains(&d.addr) && t.contains("leader")).await;

    // A change made through the protocol appears within a second, without a reload.
    b.execute("window.sameLoad = true", vec![]).await.unwrap();
    let written = Instant::now();
    let r2 = c.set("/live/new", 0, "fresh").await.unwrap();
    let shown = find_within(&b, &file("/live/new"), Duration::from_secs(1)).await;
    let took = written.elapsed();
    shown.unwrap();
    eprintln!("a write showed on the page {took:?} after it was sent");
    assert_eq!(text_of(&b, &format!("{} .file-rev", file("/live/new"))).await, r2.to_string());
    let class = find(&b, &file("/live/new")).await.attr("class").await.unwrap().unwrap_or_default();
    assert!(class.split(' ').any(|c| c == "changed"), "a new file is highlighted: {class}");
    assert_eq!(text_of(&b, "#rev").await, c.rev().await.unwrap().to_string());
    assert_eq!(b.execute("return window.sameLoad === true", vec![]).await.unwrap(), json!(true));

    // Deleted: the file goes, and its emptied directory with it.
    c.del("/live/new", -1).await.unwrap();
    gone(&b, &file("/live/new")).await;
    gone(&b, "li.dir[data-path=\"/live\"]").await;

    // Edit from the page; the protocol reads the new body.
    find(&b, &format!("{m} button.edit")).await.click().await.unwrap();
    save_edit(&b, "edited from the page").await;
    stored(&c, "/message", "edited from the page").await;
    text_becomes(&b, &format!("{m} pre.body"), |t| t == "edited from the page").await;

    // A change made meanwhile is a visible conflict, not a silent overwrite.
    find(&b, &format!("{m} button.edit")).await.click().await.unwrap();
    let body = find(&b, "#editor-body").await;
    body.send_keys(" (second edit)").await.unwrap();
    let (_, rev) = c.get("/message", None).await.unwrap();
    c.set("/message", rev, "changed elsewhere").await.unwrap();
    find(&b, "#editor-save").await.click().await.unwrap();
    confirm(&b).await;
    let err = text_becomes(&b, "#editor-error", |t| !t.is_empty()).await;
    assert!(err.starts_with("Conflict:"), "{err}");
    assert_eq!(c.get("/message", None).await.unwrap().0, "changed elsewhere");
    find(&b, "#editor-cancel").await.click().await.unwrap();

    // A long body shows a preview, and all of it on demand.
    let long: String = (0..400).map(|i| format!("line {i}\n")).collect();
    c.set("/long", 0, long.clone()).await.unwrap();
    let l = file("/long");
    assert!(text_of(&b, &format!("{l} pre.body")).await.contains("in all)"));
    find(&b, &format!("{l} button.show-all")).await.click().await.unwrap();
    text_becomes(&b, &format!("{l} pre.body"), |t| t.trim_end() == long.trim_end()).await;

    // Delete from the page.
    find(&b, &format!("{} button.delete", file("/config/db/replicas"))).await.click().await.unwrap();
    confirm(&b).await;
    gone(&b, &file("/config/db/replicas")).await;
    assert_eq!(c.get("/config/db/replicas", None).await.unwrap().1, 0);

    b.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    let width = b.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(width, json!(true), "the page fits the window's width");
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(screenshot_path(), png).unwrap();

    // Stop the server: the page says so, then reconnects to the new one by
    // itself and shows its tree, including what changed while it was away.
    drop(c);
    d.signal_and_wait("TERM");
    text_becomes(&b, "#status", |t| t.contains("reconnecting")).await;
    let d2 = Doozerd::start(&["-w", &web]);
    assert_eq!(d2.web.as_deref(), Some(web.as_str()));
    let c2 = client(&d2.addr).await;
    c2.set("/after/restart", 0, "back").await.unwrap();
    find(&b, &file("/after/restart")).await;
    text_becomes(&b, "#status", |t| t == "live").await;
    // A memory-only node starts empty: what the old one held is gone from the page too.
    gone(&b, &m).await;
    let r3 = c2.set("/after/more", 0, "live again").await.unwrap();
    assert_eq!(text_of(&b, &format!("{} .file-rev", file("/after/more"))).await, r3.to_string());

    // A subtree's page shows that subtree only.
    b.goto(&format!("http://{web}/after/")).await.unwrap();
    find(&b, &file("/after/more")).await;
    assert!(b.find(Locator::Css("li.dir[data-path=\"/ctl\"]")).await.is_err());
    assert_eq!(text_of(&b, "#where").await, "/after/");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_secrets_the_page_asks_for_one_and_grants_what_it_grants() {
    let d =
        Doozerd::start_env(&["-w", "127.0.0.1:0"], &[("DOOZER_RWSECRET", "wsecret"), ("DOOZER_ROSECRET", "rsecret")]);
    let web = d.web.clone().unwrap();
    let c = client(&d.addr).await;
    c.access(b"wsecret").await.unwrap();
    c.set("/message", 0, "secret stuff").await.unwrap();
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let b = browser(&driver, profile.path()).await;
    b.goto(&format!("http://{web}/")).await.unwrap();
    text_becomes(&b, "#status", |t| t == "needs a secret").await;
    assert!(b.find(Locator::Css(&file("/message"))).await.is_err(), "nothing shown without a secret");

    // The read-only secret shows the tree but no editing.
    find(&b, "#secret").await.send_keys("rsecret").await.unwrap();
    find(&b, "#auth button").await.click().await.unwrap();
    let m = file("/message");
    assert_eq!(text_of(&b, &format!("{m} pre.body")).await, "secret stuff");
    assert!(!find(&b, &format!("{m} button.edit")).await.is_displayed().await.unwrap());

    // A wrong one is refused; the read-write one allows editing.
    b.refresh().await.unwrap();
    b.execute("sessionStorage.clear()", vec![]).await.unwrap();
    b.refresh().await.unwrap();
    find(&b, "#secret").await.send_keys("nope").await.unwrap();
    find(&b, "#auth button").await.click().await.unwrap();
    text_becomes(&b, "#auth-error", |t| t.contains("wrong secret")).await;
    let input = find(&b, "#secret").await;
    input.clear().await.unwrap();
    input.send_keys("wsecret").await.unwrap();
    find(&b, "#auth button").await.click().await.unwrap();
    let edit = find(&b, &format!("{m} button.edit")).await;
    text_becomes(&b, "#status", |t| t == "live").await;
    assert!(edit.is_displayed().await.unwrap());
    edit.click().await.unwrap();
    save_edit(&b, "changed with the secret").await;
    stored(&c, "/message", "changed with the secret").await;
    b.close().await.unwrap();
}
