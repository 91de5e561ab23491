//! Minimal web pages for the links the exporter hands out against the simulator: a Concourse
//! build (`/teams/T/pipelines/P/jobs/J/builds/N`, as Concourse's web UI addresses it), its job
//! and pipeline, and a GitHub commit (`/OWNER/NAME/commit/SHA`, as github.com does). They are
//! there so the demo's build and commit links lead somewhere.
//!
//! The real pages are rich applications; these are plain HTML with what a person following a
//! commit looks for: status, times, inputs and outputs, the log; the commit's message and
//! files. The simulated Concourse serves them without a login (the real UI asks for one on a
//! pipeline that is not public): they exist for the demo on loopback, not as an API.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Sim;
use super::engine::{World, rfc3339};
use super::model::Build;

pub fn routes() -> Router<Arc<Sim>> {
    const PIPE: &str = "/teams/{team}/pipelines/{pipeline}";
    Router::new()
        .route(PIPE, get(pipeline_page))
        .route(&format!("{PIPE}/jobs/{{job}}"), get(job_page))
        .route(&format!("{PIPE}/jobs/{{job}}/builds/{{build}}"), get(build_page))
        .route("/builds/{id}", get(build_by_id))
        .route("/{owner}/{name}/commit/{sha}", get(commit_page))
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#111;color:#ddd;padding:1em;overflow:auto}}\
         td,th{{padding:2px 10px;text-align:left}}</style></head><body>\
         <p><small>simulated — deploy-journey's simulator</small></p>{body}</body></html>",
        t = esc(title)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{what} not found\n"))
        .into_response()
}

fn build_href(w: &World, b: &Build) -> String {
    let p = &w.concourse.pipelines[b.pipeline];
    format!("/teams/{}/pipelines/{}/jobs/{}/builds/{}", p.team, p.name, p.jobs[b.job].name, b.name)
}

fn time(t: Option<i64>) -> String {
    t.map(rfc3339).unwrap_or_else(|| "–".into())
}

fn render_build(w: &World, b: &Build) -> Response {
    let c = &w.concourse;
    let p = &c.pipelines[b.pipeline];
    let job = &p.jobs[b.job].name;
    let mut s = format!(
        "<h1><a href=\"/teams/{team}/pipelines/{pn}\">{pe}</a> / <a href=\"/teams/{team}/pipelines/{pn}/jobs/{jn}\">{je}</a> #{n}</h1>\
         <p>status <b>{st}</b> · created {cr} · started {sa} · ended {en}</p>",
        team = esc(&p.team),
        pn = esc(&p.name),
        pe = esc(&p.name),
        jn = esc(job),
        je = esc(job),
        n = esc(&b.name),
        st = b.status.as_str(),
        cr = rfc3339(b.create_time),
        sa = time(b.start_time),
        en = time(b.end_time),
    );
    if let Some(of) = b.rerun_of.and_then(|id| c.build(id)) {
        let _ = write!(s, "<p>rerun of <a href=\"{}\">#{}</a></p>", build_href(w, of), esc(&of.name));
    }
    s.push_str("<h2>inputs</h2><table>");
    for i in &b.inputs {
        let v = c.version(i.version).map(|v| format!("{:?}", v.version)).unwrap_or_default();
        let _ = write!(s, "<tr><td>get {}</td><td>{}</td></tr>", esc(&i.name), esc(&v));
    }
    s.push_str("</table><h2>outputs</h2><table>");
    for o in &b.outputs {
        let v = c.version(o.version).map(|v| format!("{:?}", v.version)).unwrap_or_default();
        let _ = write!(s, "<tr><td>put {}</td><td>{}</td></tr>", esc(&o.name), esc(&v));
    }
    s.push_str("</table><h2>log</h2><pre>");
    for l in &b.log {
        let _ = writeln!(s, "{} [{}] {}", rfc3339(l.time), esc(&l.origin), esc(&l.payload));
    }
    s.push_str("</pre>");
    page(&format!("{}/{} #{}", p.name, job, b.name), &s)
}

async fn build_page(
    State(sim): State<Arc<Sim>>,
    Path((team, pipeline, job, build)): Path<(String, String, String, String)>,
) -> Response {
    sim.with_world(|w| {
        let c = &w.concourse;
        let Some(pi) = c.pipeline_by_name(&team, &pipeline).filter(|&i| !c.pipelines[i].removed) else {
            return not_found("pipeline");
        };
        let Some(j) = c.pipelines[pi].job_by_name(&job) else { return not_found("job") };
        let found = c.pipelines[pi].jobs[j].builds.iter().filter_map(|id| c.build(*id)).find(|b| b.name == build);
        match found {
            Some(b) => render_build(w, b),
            None => not_found("build"),
        }
    })
}

async fn build_by_id(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse() else { return not_found("build") };
    sim.with_world(|w| match w.concourse.build(id) {
        Some(b) => render_build(w, b),
        None => not_found("build"),
    })
}

async fn job_page(
    State(sim): State<Arc<Sim>>,
    Path((team, pipeline, job)): Path<(String, String, String)>,
) -> Response {
    sim.with_world(|w| {
        let c = &w.concourse;
        let Some(pi) = c.pipeline_by_name(&team, &pipeline).filter(|&i| !c.pipelines[i].removed) else {
            return not_found("pipeline");
        };
        let p = &c.pipelines[pi];
        let Some(j) = p.job_by_name(&job) else { return not_found("job") };
        let mut s = format!(
            "<h1>{} / {}</h1><table><tr><th>build</th><th>status</th><th>started</th><th>ended</th></tr>",
            esc(&p.name),
            esc(&job)
        );
        // Newest first, the last 100, as the job page shows them.
        for b in p.jobs[j].builds.iter().rev().take(100).filter_map(|id| c.build(*id)) {
            let _ = write!(
                s,
                "<tr><td><a href=\"{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                build_href(w, b),
                esc(&b.name),
                b.status.as_str(),
                time(b.start_time),
                time(b.end_time)
            );
        }
        s.push_str("</table>");
        page(&format!("{}/{}", p.name, job), &s)
    })
}

async fn pipeline_page(State(sim): State<Arc<Sim>>, Path((team, pipeline)): Path<(String, String)>) -> Response {
    sim.with_world(|w| {
        let c = &w.concourse;
        let Some(pi) = c.pipeline_by_name(&team, &pipeline).filter(|&i| !c.pipelines[i].removed) else {
            return not_found("pipeline");
        };
        let p = &c.pipelines[pi];
        let mut s = format!("<h1>{}</h1><ul>", esc(&p.name));
        for j in &p.jobs {
            let last = j.builds.last().and_then(|id| c.build(*id)).map(|b| b.status.as_str()).unwrap_or("no builds");
            let _ = write!(
                s,
                "<li><a href=\"/teams/{}/pipelines/{}/jobs/{}\">{}</a> {}</li>",
                esc(&p.team),
                esc(&p.name),
                esc(&j.name),
                esc(&j.name),
                last
            );
        }
        s.push_str("</ul>");
        page(&p.name, &s)
    })
}

async fn commit_page(
    State(sim): State<Arc<Sim>>,
    Path((owner, name, sha)): Path<(String, String, String)>,
) -> Response {
    sim.with_world(|w| {
        let full = format!("{owner}/{name}");
        let Some(repo) = w.github.iter().find(|(k, _)| k.eq_ignore_ascii_case(&full)).map(|(_, r)| r) else {
            return not_found("repository");
        };
        // github.com resolves a unique prefix of at least 4 hex digits, as here.
        let hits: Vec<_> = if sha.len() >= 4 {
            repo.commits.values().filter(|c| c.sha.starts_with(&sha.to_ascii_lowercase())).collect()
        } else {
            vec![]
        };
        let [c] = hits.as_slice() else { return not_found("commit") };
        let mut s = format!(
            "<h1>{}</h1><pre>{}</pre><p>{} authored {} · committed {} · <code>{}</code></p><h2>files</h2><ul>",
            esc(c.subject()),
            esc(&c.message),
            esc(&c.author.name),
            rfc3339(c.author_date),
            rfc3339(c.committer_date),
            esc(&c.sha)
        );
        for f in &c.files {
            let _ = write!(s, "<li>{} {} (+{} −{})</li>", f.status, esc(&f.filename), f.additions, f.deletions);
        }
        s.push_str("</ul>");
        page(&format!("{} · {}/{}", c.subject(), repo.owner, repo.name), &s)
    })
}
