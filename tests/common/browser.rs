//! Headless Chromium for the daemon's status page: the DOM it builds, and what the page wrote
//! to the browser's console (an SVG path Chromium cannot parse, a resource that failed to
//! load), which `--enable-logging=stderr` prints as `...:INFO:CONSOLE...` lines.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// What headless Chromium made of a page.
pub struct Rendered {
    pub dom: String,
    /// The page's console messages, one per line.
    pub console: Vec<String>,
}

/// Loads `url` in headless Chromium (Debian package chromium; scripts/ci-setup.sh installs it).
pub fn render(url: &str) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium (Debian package chromium; scripts/ci-setup.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium: {stderr}");
    Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

/// The `<svg class="chart" data-chart="ID" ...>` elements of `job`'s charts in `dom`, each
/// with the `d` of its series path ("" when it has none).
pub fn charts(dom: &str, job: &str) -> Vec<(String, String)> {
    let Some(start) = dom.find(&format!("<section class=\"job-charts\" data-job=\"{job}\"")) else {
        return Vec::new();
    };
    let section = &dom[start..];
    let section = &section[..section.find("</section>").unwrap_or(section.len())];
    section
        .split("<svg ")
        .skip(1)
        .filter_map(|svg| {
            let id = svg
                .split("data-chart=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_owned();
            let d = svg
                .split("class=\"series")
                .nth(1)
                .and_then(|p| p.split(" d=\"").nth(1))
                .and_then(|p| p.split('"').next())
                .unwrap_or("")
                .to_owned();
            Some((id, d))
        })
        .collect()
}
