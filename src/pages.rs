//! The pages a person reads: the landing overview (`/`) and a commit's timeline
//! (`/journeys/{sha}`). Server-rendered HTML from the published views, with inline CSS and no
//! script or external asset, so they work offline, behind a proxy and without JavaScript.
//! Every value is escaped; bar positions are percentages computed here.

use std::fmt::Write as _;

use crate::view::{AttemptView, CheckJobView, JourneyView, OriginKind, StageView, WaitsKind};

/// `links:` of the config: where a person finds a journey's trace. Both set, or neither.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Links {
    /// Grafana's base URL, e.g. `https://grafana.example.com` (no trailing slash needed).
    pub grafana_url: Option<String>,
    /// The Tempo data source's uid in that Grafana.
    pub tempo_datasource_uid: Option<String>,
}

impl Links {
    /// Grafana Explore on the Tempo data source, querying the trace by id.
    pub fn trace_url(&self, trace_id: &str) -> Option<String> {
        let (base, uid) = (self.grafana_url.as_deref()?, self.tempo_datasource_uid.as_deref()?);
        let left = serde_json::json!({
            "datasource": uid,
            "queries": [{"refId": "A", "datasource": {"type": "tempo", "uid": uid}, "queryType": "traceql", "query": trace_id}],
            "range": {"from": "now-30d", "to": "now"}
        });
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("orgId", "1")
            .append_pair("left", &left.to_string())
            .finish();
        Some(format!("{}/explore?{q}", base.trim_end_matches('/')))
    }
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A duration for a person: `2d 3h`, `1h 5m`, `4m 10s`.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 86_400 {
        format!("{}d {}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        format!("{}h {}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m {}s", s / 60, s % 60)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time.
pub fn utc(t: i64) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(t).ok().and_then(|d| d.format(f).ok()).unwrap_or_else(|| t.to_string())
}

/// The shared look: system fonts, a light palette, bars as absolutely placed boxes.
pub const STYLE: &str = "\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:.8em 1.5em}header a{color:#9cc3ff}main{padding:1em 1.5em;max-width:1200px}\
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .5em}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:4px 8px;text-align:left;border-bottom:1px solid #e3e6eb;vertical-align:top}\
th{font-weight:600;color:#4a5263;font-size:.9em}code{font-size:.95em}a{color:#0b5cad}\
.badge{display:inline-block;padding:0 .5em;border-radius:9px;font-size:.85em;font-weight:600;background:#e3e6eb}\
.s-succeeded,.s-deployed,.b-succeeded{background:#2e9e5b;color:#fff}.s-failed,.b-failed,.b-errored{background:#d2383b;color:#fff}\
.s-running,.s-in_flight,.b-started{background:#2f6fd6;color:#fff}.b-aborted{background:#8a5a00;color:#fff}\
.s-pending,.s-waiting,.s-riding,.s-awaiting_approval,.b-pending{background:#c9ced8;color:#1d2330}.s-superseded{background:#6b7a99;color:#fff}\
.lane{position:relative;height:22px;background:#eef0f4;border-radius:3px;min-width:120px}\
.bar{position:absolute;top:3px;height:16px;border-radius:3px;min-width:2px}\
.wait{background:repeating-linear-gradient(45deg,#c9ced8,#c9ced8 4px,#e3e6eb 4px,#e3e6eb 8px)}\
.work{background:#2e9e5b}.work.failed{background:#d2383b}.work.running{background:#2f6fd6}\
.attempt{height:10px;top:6px}.rerun{outline:2px dashed #1d2330}.carried{opacity:.55}\
.now{position:absolute;top:0;bottom:0;width:2px;background:#d2383b}\
.axis{display:flex;justify-content:space-between;color:#6b7a99;font-size:.8em}\
.swatch{display:inline-block;width:2em;height:10px;vertical-align:middle;border-radius:2px}.muted{color:#6b7a99}pre.log{margin:0 0 .4em 1.5em;padding:.5em .8em;background:#1d2330;color:#e3e6eb;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;overflow-wrap:anywhere;max-height:20em;overflow:auto;border-radius:3px}.warn{color:#b00020;font-weight:600}.legend span{margin-right:1.2em}\
.mini{position:relative;height:10px;width:220px;background:#eef0f4;border-radius:2px;display:inline-block;vertical-align:middle}\
.running{color:#2f6fd6}.failed{color:#d2383b}.pending,.waiting,.riding{color:#6b7a99}.stuck{color:#d2383b;font-weight:bold}\
@media (max-width:700px){main{padding:.6em}td,th{padding:3px 4px}.hide-narrow{display:none}}";

/// The page frame around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{STYLE}</style></head>\
         <body><header><a href=\"/\">deploy-journey</a></header><main>{body}</main></body></html>",
        esc(title)
    )
}

/// Where in `[from, to]` a time lies, as a percentage of the width.
fn pct(t: i64, from: i64, to: i64) -> f64 {
    let span = (to - from).max(1) as f64;
    ((t - from) as f64 / span * 100.0).clamp(0.0, 100.0)
}

fn bar(class: &str, from: i64, to: i64, t0: i64, t1: i64, title: &str) -> String {
    let left = pct(from, t0, t1);
    let width = (pct(to, t0, t1) - left).max(0.3);
    format!("<span class=\"bar {class}\" style=\"left:{left:.2}%;width:{width:.2}%\" title=\"{}\"></span>", esc(title))
}

fn state_class(s: &StageView) -> &'static str {
    match s.state.as_str() {
        "failed" => "failed",
        "running" => "running",
        _ => "",
    }
}

/// Where the time of a journey goes: its span on the axis.
fn extent(j: &JourneyView, now: i64) -> (i64, i64) {
    let mut end = j.commit_time + 60;
    for s in &j.stages {
        for t in [s.ready_at, s.start, s.end].into_iter().flatten() {
            end = end.max(t);
        }
        for a in &s.attempts {
            end = end.max(a.end.unwrap_or(now).min(now.max(a.start.unwrap_or(now))));
        }
    }
    if !j.ended {
        end = end.max(now);
    }
    for t in j.eta.values() {
        end = end.max(*t);
    }
    (j.commit_time, end)
}

/// A journey in one small bar (the landing page's in-flight list): each stage's work.
pub fn mini_timeline(j: &JourneyView, now: i64) -> String {
    let (t0, t1) = extent(j, now);
    let mut h = String::from("<span class=\"mini\" aria-hidden=\"true\">");
    for s in &j.stages {
        if let Some(start) = s.start {
            h.push_str(&bar(&format!("work {}", state_class(s)), start, s.end.unwrap_or(now), t0, t1, &s.name));
        }
    }
    h.push_str("</span>");
    h
}

fn attempt_line(a: &AttemptView, j: &JourneyView, now: i64, t0: i64, t1: i64) -> String {
    let status = a.status.as_str();
    let mut cls = format!("work attempt {}", if status == "started" { "running" } else { status });
    if a.rerun_of.is_some() {
        cls.push_str(" rerun");
    }
    if !a.own {
        cls.push_str(" carried");
    }
    let lane = match a.start {
        Some(st) => bar(&cls, st, a.end.unwrap_or(now), t0, t1, &format!("{} #{} {status}", a.job, a.name)),
        None => String::new(),
    };
    let mut notes = vec![];
    if let Some(r) = a.rerun_of {
        notes.push(format!("rerun of build {r}"));
    }
    if !a.own
        && let Some(h) = &a.head
        && h != &j.sha
    {
        notes.push(format!(
            "carried by <a href=\"/journeys/{}\"><code>{}</code></a>'s build",
            esc(h),
            esc(h.get(..7).unwrap_or(h))
        ));
    }
    if matches!(status, "failed" | "errored") {
        notes.push(format!(
            "<span class=\"warn\">{status}</span>: the log is on <a href=\"{}\">the build page</a>",
            esc(&a.url)
        ));
    }
    // The end of a failed build's log, under its row: why it failed, without leaving the page.
    let excerpt = match (&a.log_excerpt, matches!(status, "failed" | "errored")) {
        (Some(text), true) if !text.is_empty() => format!(
            "<tr class=\"log-row\"><td colspan=\"4\"><pre class=\"log\" data-build=\"{}\">{}</pre></td></tr>",
            a.build_id,
            esc(text)
        ),
        _ => String::new(),
    };
    let took = match (a.start, a.end) {
        (Some(s), Some(e)) => age(e - s),
        (Some(s), None) => format!("{} so far", age(now - s)),
        _ => "not started".into(),
    };
    format!(
        "<tr class=\"attempt-row\"><td>&nbsp;&nbsp;<a class=\"build\" href=\"{url}\">{job} #{name}</a> \
         <span class=\"badge b-{status}\">{status}</span></td><td><div class=\"lane\">{lane}</div></td>\
         <td>{took}</td><td class=\"hide-narrow\">{notes}</td></tr>{excerpt}",
        url = esc(&a.url),
        job = esc(&a.job),
        name = esc(&a.name),
        status = esc(status),
        notes = notes.join("; "),
    )
}

/// One job of an Actions run under the run's row: its conclusion (or where it is), its bar and
/// its duration, its name linked to its page on GitHub.
fn job_line(h: &mut String, jb: &CheckJobView, t0: i64, t1: i64) {
    let (class, label) = match (jb.status.as_str(), jb.conclusion.as_deref()) {
        ("completed", Some("success")) => ("succeeded", "success"),
        ("completed", Some(c @ ("failure" | "timed_out" | "startup_failure"))) => ("failed", c),
        ("completed", Some("cancelled")) => ("aborted", "cancelled"),
        ("completed", Some(c)) => ("pending", c),
        ("in_progress", _) => ("started", "running"),
        _ => ("pending", "queued"),
    };
    let start = jb.started_at.or(jb.completed_at);
    let lane = match start {
        Some(s) => bar(&format!("work attempt {class}"), s, jb.completed_at.unwrap_or(s), t0, t1, &jb.name),
        None => String::new(),
    };
    let took = match (start, jb.completed_at) {
        (Some(s), Some(e)) => age(e - s),
        (_, None) if jb.status == "in_progress" => "running".to_string(),
        (_, None) => "queued".to_string(),
        (None, Some(_)) => String::new(),
    };
    // Only a web page is a link (GitHub's `html_url`); anything else is shown as text.
    let name = if jb.url.starts_with("https://") || jb.url.starts_with("http://") {
        format!("<a class=\"job\" href=\"{}\">{}</a>", esc(&jb.url), esc(&jb.name))
    } else {
        esc(&jb.name)
    };
    let _ = write!(
        h,
        "<tr class=\"job-row\"><td>&nbsp;&nbsp;&nbsp;&nbsp;{name} <span class=\"badge b-{class}\">{label}</span></td>\
         <td><div class=\"lane\">{lane}</div></td><td>{took}</td><td class=\"hide-narrow muted\">job</td></tr>",
        label = esc(label),
    );
}

/// "Before the merge": the pull request's stages on their own axis (days of review would
/// flatten the pipeline's minutes on a shared one), each Actions run linked to GitHub and
/// under it each of its jobs.
fn premerge_section(h: &mut String, j: &JourneyView) {
    match (&j.origin, &j.pull_request) {
        (Some(OriginKind::Direct), _) => {
            h.push_str(
                "<h2>Before the merge</h2><p id=\"premerge\">Pushed directly to the branch: no pull request.</p>",
            );
        }
        (_, Some(p)) => {
            let t0 = p.stages.iter().map(|s| s.start).min().unwrap_or(p.opened_at).min(p.opened_at);
            let t1 = p.merged_at.max(t0 + 60);
            let labels: String = p.labels.iter().map(|l| format!(" <span class=\"badge\">{}</span>", esc(l))).collect();
            let _ = write!(
                h,
                "<h2>Before the merge</h2><p id=\"premerge\"><a href=\"{url}\">pull request #{n}</a> {title}{labels} · \
                 opened {opened} · merged {merged}</p>\
                 <table id=\"premerge-timeline\"><tr><th>stage</th><th style=\"width:55%\"><div class=\"axis\"><span>{a}</span><span>{b}</span></div></th>\
                 <th>time</th><th class=\"hide-narrow\">notes</th></tr>",
                url = esc(&p.url),
                n = p.number,
                title = esc(&p.title),
                opened = utc(p.opened_at),
                merged = utc(p.merged_at),
                a = utc(t0),
                b = utc(t1),
            );
            for s in &p.stages {
                let note = match s.name.as_str() {
                    "coding" => "first commit → opened",
                    "pickup" => "ready for review → first review",
                    "review" => "first review → approval",
                    "checks" => "GitHub Actions on the final head, re-runs included",
                    _ => "approved and green → merged",
                };
                let class = if s.name == "pickup" || s.name == "merge" { "wait" } else { "work" };
                let _ = write!(
                    h,
                    "<tr class=\"stage-row\"><td><b>{name}</b></td><td><div class=\"lane\">{lane}</div></td><td>{took}</td>\
                     <td class=\"hide-narrow muted\">{note}</td></tr>",
                    name = esc(&s.name),
                    lane = bar(class, s.start, s.end, t0, t1, &s.name),
                    took = age(s.duration_seconds),
                );
                if s.name != "checks" {
                    continue;
                }
                for c in &p.checks {
                    let status = match c.result.as_str() {
                        "success" => "succeeded",
                        "failure" => "failed",
                        _ => "started",
                    };
                    let lane = bar(
                        &format!("work attempt {status}"),
                        c.started_at,
                        c.completed_at.unwrap_or(c.started_at),
                        t0,
                        t1,
                        &c.name,
                    );
                    let rerun = if c.attempt > 1 { format!("attempt {} (re-run)", c.attempt) } else { String::new() };
                    let _ = write!(
                        h,
                        "<tr class=\"attempt-row\"><td>&nbsp;&nbsp;<a class=\"build\" href=\"{url}\">{name}</a> \
                         <span class=\"badge b-{status}\">{result}</span></td><td><div class=\"lane\">{lane}</div></td>\
                         <td>{took}</td><td class=\"hide-narrow\">{rerun}</td></tr>",
                        url = esc(&c.url),
                        name = esc(&c.name),
                        result = esc(&c.result),
                        took = c.completed_at.map(|e| age(e - c.started_at)).unwrap_or_else(|| "running".into()),
                    );
                    for jb in &c.jobs {
                        job_line(h, jb, t0, t1);
                    }
                }
            }
            h.push_str("</table>");
        }
        _ => {}
    }
}

/// `/journeys/{sha}`: a waterfall of one commit's journey, from the commit through every stage
/// to its environments, waits drawn apart from work, every build attempt linked.
/// `carried` lists the commits this one's builds carried along (its batch).
pub fn journey_page(j: &JourneyView, now: i64, carried: &[(String, String)], trace_link: Option<&str>) -> String {
    let (t0, t1) = extent(j, now);
    let mut h = String::new();
    let outcome = j.outcome.as_str();
    let _ = write!(
        h,
        "<h1><code>{short}</code> {subject}</h1>\
         <p><span class=\"badge s-{outcome}\" id=\"outcome\">{outcome}</span> {change} change by {author}, committed {when} · \
         <a href=\"{commit_url}\">commit</a> · <a href=\"/api/v1/journeys/{sha}\">JSON</a>{trace}</p>",
        short = esc(&j.short_sha),
        subject = esc(&j.subject),
        change = esc(j.change_type.as_str()),
        author = esc(&j.author),
        when = utc(j.commit_time),
        commit_url = esc(&j.commit_url),
        sha = esc(&j.sha),
        trace = trace_link.map(|u| format!(" · <a href=\"{}\">trace</a>", esc(u))).unwrap_or_default(),
    );
    // Where it is: deployed, expected, failed.
    let mut facts = vec![];
    for (env, t) in &j.deployed_at {
        let lead = j.lead_time_seconds.get(env).map(|l| format!(" (lead time {})", age(*l))).unwrap_or_default();
        facts.push(format!("in <b>{}</b> since {}{lead}", esc(env), utc(*t)));
    }
    for (env, t) in &j.eta {
        facts.push(format!(
            "<span id=\"eta-{e}\">expected in <b>{e}</b> around {} (in {})</span>",
            utc(*t),
            age(t - now),
            e = esc(env)
        ));
    }
    if let Some(st) = &j.failed_stage {
        facts.push(format!("<span class=\"warn\">failed at {}</span>", esc(st)));
    }
    if j.not_picked_up {
        facts.push("<span class=\"warn\">not picked up: no build has taken it</span>".into());
    }
    if let Some(c) = &j.carried_by {
        facts.push(format!(
            "rode in the batch of <a href=\"/journeys/{}\"><code>{}</code></a>",
            esc(c),
            esc(c.get(..7).unwrap_or(c))
        ));
    }
    if !carried.is_empty() {
        let list: Vec<String> = carried
            .iter()
            .map(|(sha, subject)| {
                format!(
                    "<a href=\"/journeys/{}\" title=\"{}\"><code>{}</code></a>",
                    esc(sha),
                    esc(subject),
                    esc(sha.get(..7).unwrap_or(sha))
                )
            })
            .collect();
        facts.push(format!("its builds carried along {}", list.join(", ")));
    }
    if !facts.is_empty() {
        let _ = write!(h, "<p id=\"where\">{}</p>", facts.join(" · "));
    }
    premerge_section(&mut h, j);
    let _ = write!(
        h,
        "<h2>Timeline</h2><p class=\"legend muted\"><span><span class=\"swatch wait\"></span> waiting</span>\
         <span><span class=\"swatch work\"></span> building</span><span><span class=\"swatch work failed\"></span> failed</span>\
         <span>dashed: a rerun · faded: a later commit's build that carried this one</span></p>\
         <table id=\"timeline\"><tr><th>stage</th><th style=\"width:55%\"><div class=\"axis\"><span>{}</span><span>{}</span></div></th>\
         <th>time</th><th class=\"hide-narrow\">notes</th></tr>",
        utc(t0),
        utc(t1)
    );
    for s in &j.stages {
        let state = s.state.as_str();
        let mut lane = String::new();
        if let (Some(r), Some(st)) = (s.ready_at, s.start) {
            lane.push_str(&bar("wait", r, st, t0, t1, &format!("{} waited {}", s.name, age(st - r))));
        } else if let (Some(r), true) = (s.ready_at, s.start.is_none() && s.state.as_str() != "not_applicable") {
            lane.push_str(&bar("wait", r, now, t0, t1, &format!("{} waiting", s.name)));
        }
        if let Some(st) = s.start {
            lane.push_str(&bar(&format!("work {}", state_class(s)), st, s.end.unwrap_or(now), t0, t1, &s.name));
        }
        if !j.ended {
            let _ = write!(lane, "<span class=\"now\" style=\"left:{:.2}%\" title=\"now\"></span>", pct(now, t0, t1));
        }
        let time = match (s.wait_seconds, s.duration_seconds) {
            (Some(w), Some(d)) => format!("waited {} · built {}", age(w), age(d)),
            (Some(w), None) => {
                format!("waited {} · building {}", age(w), s.start.map(|st| age(now - st)).unwrap_or_default())
            }
            _ => match s.ready_at {
                Some(r) if state != "not_applicable" && s.end.is_none() => format!("waiting {}", age(now - r)),
                _ => "–".into(),
            },
        };
        let mut notes = vec![];
        if let Some(w) = &s.waits_for {
            let cls = if w.kind == WaitsKind::Busy { " class=\"warn\"" } else { "" };
            notes.push(format!("<span{cls}>waits for: {}</span>", esc(&w.text)));
        }
        if let Some(m) = &s.attribution {
            notes.push(format!("tied by <i>{}</i>", esc(m.as_str())));
        }
        let _ = write!(
            h,
            "<tr class=\"stage-row\" data-stage=\"{name}\"><td><b>{name}</b> <span class=\"badge s-{state}\">{state_text}</span></td>\
             <td><div class=\"lane\">{lane}</div></td><td>{time}</td><td class=\"hide-narrow\">{notes}</td></tr>",
            name = esc(&s.name),
            state = esc(state),
            state_text = esc(&state.replace('_', " ")),
            notes = notes.join("; "),
        );
        for a in &s.attempts {
            h.push_str(&attempt_line(a, j, now, t0, t1));
        }
    }
    h.push_str("</table>");
    // The same facts as a plain table: for screen readers and for copying.
    h.push_str(
        "<h2>Stages as a table</h2><table id=\"stages\"><tr><th>stage</th><th>state</th><th>ready</th><th>started</th>\
         <th>ended</th><th>wait</th><th>duration</th><th>builds</th></tr>",
    );
    for s in &j.stages {
        let t = |v: Option<i64>| v.map(utc).unwrap_or_else(|| "–".into());
        let d = |v: Option<i64>| v.map(age).unwrap_or_else(|| "–".into());
        let builds: Vec<String> = s
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "<a href=\"{}\">{} #{}</a> ({})",
                    esc(&a.url),
                    esc(&a.job),
                    esc(&a.name),
                    esc(a.status.as_str())
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(s.state.as_str()),
            t(s.ready_at),
            t(s.start),
            t(s.end),
            d(s.wait_seconds),
            d(s.duration_seconds),
            builds.join("<br>")
        );
    }
    h.push_str("</table>");
    page(&format!("{} {} — deploy-journey", j.short_sha, j.subject), &h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{AttemptView, JourneyView};

    fn journey(subject: &str) -> JourneyView {
        let text = r#"{
            "sha": "SHA", "short_sha": "aaaaaaa", "subject": SUBJECT, "author": "<b>eve</b>",
            "commit_url": "https://github.com/o/r/commit/aaaa\"onclick=\"x", "commit_time": 1000,
            "change_type": "backend", "resources": [], "outcome": "in_flight", "ended": false,
            "failed_stage": null, "carried_on": false, "carried_by": null, "not_picked_up": false,
            "vanished": false, "deployed_at": {}, "lead_time_seconds": {}, "trace_id": "",
            "stages": [{
                "name": "tests", "state": "succeeded", "ready_at": 1000, "start": 1100, "end": 1700,
                "wait_seconds": 100, "duration_seconds": 600, "attribution": "exact", "expected_jobs": [],
                "attempts": [{"build_id": 1, "pipeline": "p", "job": "test-bats", "name": "7", "status": "failed",
                  "start": 1100, "end": 1300, "url": "https://ci/builds/1", "rerun_of": null, "attribution": "exact",
                  "own": true, "head": null},
                 {"build_id": 2, "pipeline": "p", "job": "test-bats", "name": "7.1", "status": "succeeded",
                  "start": 1350, "end": 1700, "url": "https://ci/builds/2", "rerun_of": 1, "attribution": "exact",
                  "own": true, "head": null}]
            }, {
                "name": "deploy", "state": "pending", "ready_at": 1700, "start": null, "end": null,
                "wait_seconds": null, "duration_seconds": null, "attribution": null, "expected_jobs": [],
                "attempts": [], "waits_for": {"kind": "busy", "text": "the stage is busy with build deploy #4"}
            }],
            "eta": {"staging": 4000}
        }"#;
        let text = text
            .replace("\"SHA\"", &format!("{:?}", "a".repeat(40)))
            .replace("SUBJECT", &serde_json::to_string(subject).unwrap());
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let html = journey_page(&journey("<script>alert(1)</script> & \"x\""), 2000, &[], None);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;"));
        assert!(!html.contains("<b>eve</b>") && html.contains("&lt;b&gt;eve&lt;/b&gt;"));
        assert!(!html.contains("\"onclick=") && html.contains("&quot;onclick=&quot;"));
        // No external asset: every src/href is relative or one of the journey's own links.
        assert!(!html.contains("src="));
    }

    #[test]
    fn waits_work_reruns_and_predictions_are_drawn() {
        let html = journey_page(&journey("feat: x"), 2000, &[("b".repeat(40), "fix".into())], None);
        // Axis 1000 → 4000 (the prediction is the farthest point): the wait 1000→1100 starts at 0 %.
        assert!(html.contains("class=\"bar wait\" style=\"left:0.00%;width:3.33%\""), "{html}");
        // The failed attempt and the rerun, each linked; the rerun dashed; the failure points at the log.
        assert!(html.contains("<a class=\"build\" href=\"https://ci/builds/1\">test-bats #7</a>"));
        assert!(html.contains("work attempt succeeded rerun"));
        assert!(html.contains("rerun of build 1"));
        assert!(html.contains("the log is on <a href=\"https://ci/builds/1\">the build page</a>"));
        assert!(html.contains("waits for: the stage is busy with build deploy #4"));
        assert!(html.contains("id=\"eta-staging\""));
        assert!(html.contains("its builds carried along <a href=\"/journeys/bbbb"));
        let _ = AttemptView::clone;
    }

    #[test]
    fn the_mini_timeline_draws_each_started_stage_to_scale() {
        // Axis 1000 → 4000: tests worked 1100 → 1700; deploy has not started.
        let html = mini_timeline(&journey("x"), 2000);
        assert_eq!(
            html,
            "<span class=\"mini\" aria-hidden=\"true\"><span class=\"bar work \" style=\"left:3.33%;width:20.00%\" \
             title=\"tests\"></span></span>"
        );
    }

    #[test]
    fn bar_positions_are_clamped_percentages() {
        assert_eq!(pct(5, 0, 10), 50.0);
        assert_eq!(pct(-5, 0, 10), 0.0);
        assert_eq!(pct(50, 0, 10), 100.0);
        assert_eq!(pct(3, 3, 3), 0.0);
    }

    /// Under each Actions run, its jobs: linked to their page (a web page only), their
    /// conclusion and duration shown, every value escaped.
    #[test]
    fn each_runs_jobs_are_listed_with_conclusion_duration_and_link() {
        let mut j = journey("feat: x");
        j.origin = Some(OriginKind::PullRequest);
        let pr = serde_json::json!({
            "number": 7, "title": "t", "url": "https://github.com/o/r/pull/7", "labels": [], "head_sha": "h",
            "first_commit_at": null, "opened_at": 100, "ready_at": null, "first_review_at": null,
            "approved_at": null, "merged_at": 2000,
            "stages": [{"name": "checks", "start": 200, "end": 1200, "duration_seconds": 1000}],
            "checks": [{"id": 5, "name": "CI", "url": "https://github.com/o/r/actions/runs/5", "attempt": 2,
              "started_at": 200, "completed_at": 1200, "result": "success", "jobs": [
                {"id": 51, "name": "unit <tests>", "url": "https://github.com/o/r/actions/runs/5/job/51", "attempt": 2,
                 "status": "completed", "conclusion": "timed_out", "started_at": 300, "completed_at": 1020},
                {"id": 52, "name": "lint", "url": "javascript:alert(1)", "attempt": 2,
                 "status": "in_progress", "conclusion": null, "started_at": 400, "completed_at": null}]}],
            "reruns": 1
        });
        j.pull_request = Some(serde_json::from_value(pr).unwrap());
        let html = journey_page(&j, 3000, &[], None);
        let rows: Vec<&str> =
            html.split("<tr class=\"job-row\">").skip(1).map(|r| r.split("</tr>").next().unwrap()).collect();
        assert_eq!(rows.len(), 2, "{html}");
        assert!(
            rows[0].contains(
                "<a class=\"job\" href=\"https://github.com/o/r/actions/runs/5/job/51\">unit &lt;tests&gt;</a>"
            ),
            "{}",
            rows[0]
        );
        assert!(rows[0].contains("<span class=\"badge b-failed\">timed_out</span>"), "{}", rows[0]);
        assert!(rows[0].contains(&format!("<td>{}</td>", age(720))), "{}", rows[0]);
        assert!(!rows[1].contains("href") && rows[1].contains("lint"), "{}", rows[1]);
        assert!(rows[1].contains("b-started\">running</span>") && rows[1].contains("<td>running</td>"), "{}", rows[1]);
        assert!(!html.contains("javascript:"), "{html}");
    }
}
