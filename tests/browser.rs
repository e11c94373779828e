//! The web view in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) with fantoccini. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them); `CHROMIUM` and `CHROMEDRIVER`
//! name other binaries. Writes screenshots of the main views to
//! `target/web-*.png`: the tree with a file selected, the tree at a past
//! revision, a large directory, and the cluster panel with a member down.

mod common;

use common::*;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::Path;
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

fn dir(path: &str) -> String {
    format!("li.dir[data-path=\"{path}\"]")
}

/// Clicks the element, again if the page re-rendered it meanwhile (a stale
/// or covered element), until the deadline.
async fn click(b: &Client, css: &str) {
    let start = Instant::now();
    loop {
        let clicked = match b.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match clicked {
            Ok(_) => return,
            Err(e) if start.elapsed() > DEADLINE => panic!("cannot click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Clicks the tree row of `path` (a file selects it; a directory also opens or closes).
async fn click_row(b: &Client, path: &str) {
    click(b, &format!("li[data-path=\"{path}\"] > .node")).await;
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

/// The text of the alert the page opened, which is then dismissed.
async fn dismiss(b: &Client) -> String {
    let start = Instant::now();
    loop {
        match b.get_alert_text().await {
            Ok(text) => {
                b.dismiss_alert().await.unwrap();
                return text;
            }
            Err(CmdError::Standard(_)) if start.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("no dialog: {e}"),
        }
    }
}

fn screenshot(name: &str, png: Vec<u8>) {
    assert!(png.starts_with(b"\x89PNG"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").to_path_buf();
    std::fs::write(dir.join(format!("web-{name}.png")), png).unwrap();
}

async fn open_page(b: &Client, url: &str) {
    b.goto(url).await.unwrap();
    text_becomes(b, "#status", |t| t == "live").await;
}

async fn scalar(b: &Client, js: &str) -> serde_json::Value {
    b.execute(js, vec![]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_detail_editing_filters_and_live_changes() {
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
    open_page(&b, &format!("http://{web}/")).await;

    // The tree: top-level directories open, /ctl closed and marked as the system's own.
    find(&b, &format!("{} {}", dir("/config"), dir("/config/db"))).await;
    assert_eq!(text_of(&b, &format!("{} > .node .badge", dir("/ctl"))).await, "system");
    assert!(!find(&b, &format!("{} > ul", dir("/ctl"))).await.is_displayed().await.unwrap(), "/ctl starts closed");
    assert!(!find(&b, &format!("{} > ul", dir("/config/db"))).await.is_displayed().await.unwrap(), "deeper ones too");

    // Selecting a file: breadcrumbs, revision, size, body.
    click_row(&b, "/message").await;
    text_becomes(&b, "#detail pre.body", |t| t.trim_end() == "hello, world").await;
    let facts = text_of(&b, "#detail .facts").await;
    assert!(facts.contains(&format!("revision {r1}")) && facts.contains("13 bytes"), "{facts}");
    assert_eq!(text_of(&b, "#crumbs").await.split_whitespace().collect::<String>(), "/message");
    click_row(&b, "/config/blob").await;
    text_becomes(&b, "#detail pre.body", |t| t.starts_with("binary, 8 bytes: 00 9f 92 96 ff")).await;
    // A directory lists its entries; its breadcrumbs lead back up.
    click_row(&b, "/config/db").await;
    text_becomes(&b, "#detail", |t| t.contains("2 entries") && t.contains("primary") && t.contains("replicas")).await;
    find(&b, &file("/config/db/primary")).await;

    // The cluster panel arrives over the socket: the page never polls for it.
    text_becomes(&b, "#members tbody", |t| t.contains(&d.addr) && t.contains("leader")).await;
    let polled = scalar(
        &b,
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/_api/cluster')).length",
    )
    .await;
    assert_eq!(polled, json!(0));

    // A change made through the protocol appears within a second, in the tree
    // and in the feed, without a reload.
    scalar(&b, "window.sameLoad = true").await;
    let written = Instant::now();
    let r2 = c.set("/live/new", 0, "fresh").await.unwrap();
    let shown = find_within(&b, &dir("/live"), Duration::from_secs(1)).await;
    let took = written.elapsed();
    shown.unwrap();
    eprintln!("a write showed on the page {took:?} after it was sent");
    text_becomes(&b, "#feed", |t| t.contains("/live/new") && t.contains(&format!("@{r2}"))).await;
    text_becomes(&b, "#rev", |t| t == r2.to_string()).await;
    click_row(&b, "/live").await;
    assert_eq!(text_of(&b, &format!("{} .meta", file("/live/new"))).await, format!("rev {r2} · 5 bytes"));
    // Deleted: the file goes, and its emptied directory with it.
    c.del("/live/new", -1).await.unwrap();
    gone(&b, &file("/live/new")).await;
    gone(&b, &dir("/live")).await;
    assert_eq!(scalar(&b, "return window.sameLoad === true").await, json!(true));

    // Edit from the page, with the revision read; the protocol reads the new body.
    click_row(&b, "/message").await;
    click(&b, "#detail button.edit").await;
    save_edit(&b, "edited from the page").await;
    stored(&c, "/message", "edited from the page").await;
    text_becomes(&b, "#detail pre.body", |t| t == "edited from the page").await;
    // A change made meanwhile is a visible conflict, not a silent overwrite.
    click(&b, "#detail button.edit").await;
    find(&b, "#editor-body").await.send_keys(" (second edit)").await.unwrap();
    let (_, rev) = c.get("/message", None).await.unwrap();
    c.set("/message", rev, "changed elsewhere").await.unwrap();
    find(&b, "#editor-save").await.click().await.unwrap();
    confirm(&b).await;
    let err = text_becomes(&b, "#editor-error", |t| !t.is_empty()).await;
    assert!(err.starts_with("Conflict:"), "{err}");
    assert_eq!(c.get("/message", None).await.unwrap().0, "changed elsewhere");
    find(&b, "#editor-cancel").await.click().await.unwrap();

    // Its changes in the history window, newest first.
    text_becomes(&b, "#changes", |t| t.contains("changed elsewhere") && t.contains(&format!("@{r1}"))).await;
    let listed: Vec<i64> =
        scalar(&b, "return [...document.querySelectorAll('#changes li')].map(li => Number(li.dataset.rev))")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
    assert!(listed.windows(2).all(|w| w[0] > w[1]) && listed.last() == Some(&r1), "{listed:?}");
    screenshot("view", b.screenshot().await.unwrap());

    // The tree as it was at r1: /config did not exist yet, /message held its first body.
    b.execute(&format!("document.querySelector('#changes li[data-rev=\"{r1}\"] button.view-at').click()"), vec![])
        .await
        .unwrap();
    text_becomes(&b, "#rev-mode", |t| t == format!("as of revision {r1}")).await;
    gone(&b, &dir("/config")).await;
    text_becomes(&b, "#detail pre.body", |t| t.trim_end() == "hello, world").await;
    assert!(!find(&b, "#new-file").await.is_displayed().await.unwrap(), "no editing in the past");
    screenshot("history", b.screenshot().await.unwrap());
    // The slider goes there too (a drag ends with a change event), and back to live.
    let moved = format!(
        "const s = document.getElementById('rev-slider'); s.value = {}; \
         s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'))",
        r1 + 2
    );
    b.execute(&moved, vec![]).await.unwrap();
    text_becomes(&b, "#rev-mode", |t| t == format!("as of revision {}", r1 + 2)).await;
    find(&b, &dir("/config")).await;
    find(&b, "#rev-live").await.click().await.unwrap();
    text_becomes(&b, "#rev-mode", |t| t == "latest").await;

    // Filter by glob, search by name.
    let filter = find(&b, "#filter").await;
    filter.send_keys("/config/**\n").await.unwrap();
    text_becomes(&b, "#matches", |t| {
        t.contains("/config/db/primary") && t.contains("/config/blob") && !t.contains("/message")
    })
    .await;
    filter.clear().await.unwrap();
    find(&b, "#search").await.send_keys("prim").await.unwrap();
    text_becomes(&b, "#matches", |t| t.contains("/config/db/primary") && !t.contains("/config/blob")).await;
    b.execute("document.getElementById('search').value = ''; document.getElementById('search').dispatchEvent(new Event('input'))", vec![]).await.unwrap();
    text_becomes(&b, "#notice", |t| t.is_empty()).await;

    // Delete from the page.
    click_row(&b, "/config/db/replicas").await;
    click(&b, "#detail button.delete").await;
    confirm(&b).await;
    gone(&b, &file("/config/db/replicas")).await;
    assert_eq!(c.get("/config/db/replicas", None).await.unwrap().1, 0);

    // /ctl: a second confirmation says what the change does; dismissed, nothing changes.
    click_row(&b, "/ctl").await;
    click_row(&b, "/ctl/cal").await;
    click_row(&b, "/ctl/cal/0").await;
    text_becomes(&b, "#detail", |t| t.contains("voting slot")).await;
    click(&b, "#detail button.edit").await;
    find(&b, "#editor-body").await.clear().await.unwrap();
    find(&b, "#editor-save").await.click().await.unwrap();
    confirm(&b).await;
    let warning = dismiss(&b).await;
    assert!(warning.contains("demotes member") && warning.contains("stops voting"), "{warning}");
    let (holder, _) = c.get("/ctl/cal/0", None).await.unwrap();
    assert!(!holder.is_empty(), "the slot is untouched");
    find(&b, "#editor-cancel").await.click().await.unwrap();

    let width = scalar(&b, "return document.documentElement.scrollWidth <= window.innerWidth").await;
    assert_eq!(width, json!(true), "the page fits the window's width");

    // Stop the server: the page says so, then reconnects to the new one by
    // itself and shows its tree, including what changed while it was away.
    drop(c);
    d.signal_and_wait("TERM");
    text_becomes(&b, "#status", |t| t.contains("reconnecting")).await;
    let d2 = Doozerd::start(&["-w", &web]);
    let c2 = client(&d2.addr).await;
    c2.set("/after/restart", 0, "back").await.unwrap();
    find(&b, &dir("/after")).await;
    text_becomes(&b, "#status", |t| t == "live").await;
    // A memory-only node starts empty: what the old one held is gone from the page too.
    gone(&b, &file("/message")).await;
    let r3 = c2.set("/after/more", 0, "live again").await.unwrap();
    click_row(&b, "/after").await;
    click_row(&b, "/after/more").await;
    text_becomes(&b, "#detail .facts", |t| t.contains(&format!("revision {r3}"))).await;

    // A subtree's page shows that subtree only.
    open_page(&b, &format!("http://{web}/after/")).await;
    find(&b, &file("/after/more")).await;
    assert!(b.find(Locator::Css(&dir("/ctl"))).await.is_err());
    assert_eq!(text_of(&b, "#where").await, "/after/");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_directory_paints_a_page_at_a_time() {
    // 50,000 files in one directory (WEB_LARGE_FILES, a multiple of 1,000, for
    // a measurement with more): the page lists 500, and more on demand.
    let files: usize = std::env::var("WEB_LARGE_FILES").ok().and_then(|n| n.parse().ok()).unwrap_or(50_000);
    let d = Doozerd::start(&["-w", "127.0.0.1:0"]);
    let web = d.web.clone().unwrap();
    let c = client(&d.addr).await;
    for chunk in 0..files / 1000 {
        let paths: Vec<String> = (0..1000).map(|i| format!("/big/f{:06}", chunk * 1000 + i)).collect();
        let writes: Vec<_> = paths.iter().map(|p| c.set(p, -1, "x")).collect();
        for w in writes {
            w.await.unwrap();
        }
    }
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let b = browser(&driver, profile.path()).await;
    let started = Instant::now();
    b.goto(&format!("http://{web}/")).await.unwrap();
    find(&b, &file("/big/f000499")).await;
    eprintln!("first paint of a {files}-entry directory: {:?}", started.elapsed());
    let count = |css: &'static str| {
        let b = b.clone();
        async move { scalar(&b, &format!("return document.querySelectorAll('{css}').length")).await }
    };
    assert_eq!(count("li.dir[data-path=\"/big\"] li.file").await, json!(500));
    let more = find(&b, "li.more button").await;
    let thousands = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        out
    };
    assert_eq!(more.text().await.unwrap(), format!("Show more ({} more)", thousands(files - 500)));
    assert_eq!(text_of(&b, &format!("{} > .node .meta", dir("/big"))).await, format!("{} entries", thousands(files)));
    more.click().await.unwrap();
    find(&b, &file("/big/f000999")).await;
    assert_eq!(count("li.dir[data-path=\"/big\"] li.file").await, json!(1000));
    // Selecting the directory lists a page of it too.
    click_row(&b, "/big").await;
    text_becomes(&b, "#detail", |t| {
        t.contains(&format!("{} entries", thousands(files))) && t.contains(&format!("{} more", thousands(files - 500)))
    })
    .await;
    screenshot("large", b.screenshot().await.unwrap());
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_member_shows_as_such() {
    let nodes = cluster(3, &["-w", "127.0.0.1:0"]).await;
    let web = nodes[0].web.clone().unwrap();
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let b = browser(&driver, profile.path()).await;
    open_page(&b, &format!("http://{web}/")).await;
    text_becomes(&b, "#members tbody", |t| t.matches("127.0.0.1:").count() == 3 && !t.contains("unreachable")).await;
    nodes[2].signal("STOP");
    let row = "#members tbody tr.unreachable".to_string();
    text_becomes(&b, &row, |t| t.contains(&nodes[2].addr) && t.contains("unreachable")).await;
    text_becomes(&b, "#cluster-note", |t| t.contains("1 unreachable")).await;
    screenshot("cluster", b.screenshot().await.unwrap());
    nodes[2].signal("CONT");
    gone(&b, &row).await;
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
    click_row(&b, "/message").await;
    text_becomes(&b, "#detail pre.body", |t| t == "secret stuff").await;
    assert!(!find(&b, "#detail button.edit").await.is_displayed().await.unwrap());

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
    text_becomes(&b, "#status", |t| t == "live").await;
    click_row(&b, "/message").await;
    let edit = find(&b, "#detail button.edit").await;
    assert!(edit.is_displayed().await.unwrap());
    edit.click().await.unwrap();
    save_edit(&b, "changed with the secret").await;
    stored(&c, "/message", "changed with the secret").await;
    b.close().await.unwrap();
}
