//! Issue 18, the pre-merge segment: each commit's pull request (or direct push) read through
//! the real GitHub source from the simulator, compared with the simulator's model.

use deploy_journey::core::premerge::Origin;

use crate::journeys::run_scenario;

#[tokio::test]
async fn a_hotfix_prs_moments_and_labels_are_read_and_a_direct_push_is_direct() {
    let r = run_scenario("hotfix-pr.yaml", "lana").await;
    let a = r.journey("a");
    let h = r.journey("h");
    eprintln!("{:#?}\n{:#?}", a.origin, h.origin);
    assert_eq!(a.origin, Some(Origin::Direct), "a was pushed straight to main");
    let Some(Origin::Pull(p)) = &h.origin else { panic!("h came from PR 4301: {:?}", h.origin) };
    let model = r.sim.with_world(|w| {
        let repo = w.github.values().find(|rp| rp.pull(4301).is_some()).expect("the hotfix PR");
        repo.pull(4301).cloned().unwrap()
    });
    assert_eq!(p.number, 4301);
    assert_eq!(p.opened_at, model.created_at);
    assert_eq!(Some(p.merged_at), model.merged_at);
    assert_eq!(p.labels, model.labels);
    assert_eq!(p.reviews.len(), model.reviews.len());
    let stages = h.premerge().expect("a PR has pre-merge stages");
    assert!(stages.merge.is_some());
}
