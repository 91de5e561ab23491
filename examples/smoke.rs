use deploy_journey::sim::engine::*;
use deploy_journey::sim::model::*;
use deploy_journey::sim::topology::Topology;
fn main() {
    let t = Topology::builtin("lana").unwrap();
    let start = 1_772_000_000;
    let mut w = World::new(t, start, 7);
    let who = Person { name: "Alice".into(), email: "a@x".into(), login: Some("alice".into()) };
    for (k, files) in [vec!["core/x.rs"], vec!["core/y.rs"], vec!["apps/admin-panel/a.tsx"], vec!["dagster/a.py"]]
        .into_iter()
        .enumerate()
    {
        w.schedule_action(
            start + 600 + k as i64 * 120,
            Action::Commit {
                repo: "GaloyMoney/lana-bank".into(),
                branch: "main".into(),
                spec: CommitSpec {
                    message: format!("feat: c{k}"),
                    files: files.into_iter().map(String::from).collect(),
                    author: who.clone(),
                    author_date: None,
                },
            },
        );
    }
    w.advance_to(start + 4 * 3600);
    let start = start;
    let _ = start;
    for b in &w.concourse.builds {
        let p = &w.concourse.pipelines[b.pipeline];
        let ins: Vec<String> = b
            .inputs
            .iter()
            .map(|i| {
                format!(
                    "{}={}",
                    i.name,
                    version_key(&w.concourse.version(i.version).unwrap().version).chars().take(20).collect::<String>()
                )
            })
            .collect();
        println!(
            "{:>3} {}/{} #{} {:?} {:?}-{:?} {:?}",
            b.id,
            p.name,
            p.jobs[b.job].name,
            b.name,
            b.status,
            b.start_time.map(|t| (t - start) / 60),
            b.end_time.map(|t| (t - start) / 60),
            ins
        );
    }
    let repo = w.tracked_repo();
    for sha in &repo.branches["main"] {
        let bs = w.builds_containing(sha);
        println!(
            "{} {:?} -> {:?}",
            &sha[..7],
            repo.commits[sha].subject(),
            bs.iter()
                .map(|(p, j, id)| format!("{}#{}", w.concourse.pipelines[*p].jobs[*j].name, id))
                .collect::<Vec<_>>()
        );
    }
}
