//! The checked-in `fixtures/` must match the traffic plan in
//! `vpslens_testkit::fixtures` (regenerate with `scripts/gen-fixtures.sh`).

use anyhow::Result;
use vpslens_testkit::fixtures::{check_dir, fixtures_dir, load_expected, FAKE_TOKEN};

#[test]
fn checked_in_fixtures_match_the_plan() -> Result<()> {
    let dir = fixtures_dir();
    check_dir(&dir)?;
    let e = load_expected(&dir)?;
    assert_eq!(e.token, FAKE_TOKEN);
    assert_eq!(e.nodes["us-01"].status_0, 1);
    assert!(e
        .special
        .iter()
        .any(|s| s.tag == "forged_xff" && s.attributed_to == "us-01"));
    Ok(())
}
