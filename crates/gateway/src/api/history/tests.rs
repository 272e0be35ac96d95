use super::*;

#[test]
fn times_round_trip_and_malformed_ones_are_refused() {
    let now = now_ms();
    let text = rfc3339(now);
    assert_eq!(instant(&text, "at").unwrap(), now);
    assert_eq!(
        instant("2026-12-03T16:47:36Z", "at").unwrap(),
        1_796_316_456_000
    );
    assert_eq!(
        instant("yesterday", "at").unwrap_err().status(),
        StatusCode::BAD_REQUEST
    );
    assert!(version_id("0", "version").is_err());
    assert!(version_id("12x", "version").is_err());
    assert_eq!(version_id("12", "version").unwrap(), 12);
}

#[test]
fn one_point_at_most() {
    let both = vec![
        ("version".to_owned(), "1".to_owned()),
        ("at".to_owned(), "2026-12-03T16:47:36Z".to_owned()),
    ];
    assert!(point_asked(&both).is_err());
    assert_eq!(point_asked(&[]).unwrap(), None);
}
