//! Translation of cron and rate expressions to EventBridge's forms, and fire times.

use jiff::Timestamp;

use super::*;

/// Input, then the EventBridge expression or a substring of the error.
const CRON_CASES: &[(&str, Result<&str, &str>)] = &[
    // Shorthands.
    ("@yearly", Ok("cron(0 0 1 1 ? *)")),
    ("@annually", Ok("cron(0 0 1 1 ? *)")),
    ("@monthly", Ok("cron(0 0 1 * ? *)")),
    ("@weekly", Ok("cron(0 0 ? * 1 *)")),
    ("@daily", Ok("cron(0 0 * * ? *)")),
    ("@hourly", Ok("cron(0 * * * ? *)")),
    ("@DAILY", Ok("cron(0 0 * * ? *)")),
    ("@reboot", Err("shorthand `@reboot` is not supported")),
    // Neither day restricted: `*` in day of month, `?` in day of week.
    ("0 3 * * *", Ok("cron(0 3 * * ? *)")),
    ("*/15 * * * *", Ok("cron(*/15 * * * ? *)")),
    ("*/1 * * * *", Ok("cron(*/1 * * * ? *)")),
    ("5/10 * * * *", Ok("cron(5/10 * * * ? *)")),
    ("0,30 8-18 * * *", Ok("cron(0,30 8-18 * * ? *)")),
    ("  0   3 * * *  ", Ok("cron(0 3 * * ? *)")),
    ("0 0 ? * *", Ok("cron(0 0 * * ? *)")),
    // `*/1` in a day field restricts nothing, so the other may.
    ("0 0 */1 * MON", Ok("cron(0 0 ? * MON *)")),
    ("0 0 1 * */1", Ok("cron(0 0 1 * ? *)")),
    // Day of week: names kept, numbers shifted to 1 = Sunday, steps written out.
    ("0 9 * * 1-5", Ok("cron(0 9 ? * 2-6 *)")),
    ("0 9 * * MON-FRI", Ok("cron(0 9 ? * MON-FRI *)")),
    ("0 9 * * mon-fri", Ok("cron(0 9 ? * MON-FRI *)")),
    ("0 0 * * 0", Ok("cron(0 0 ? * 1 *)")),
    ("0 0 * * 7", Ok("cron(0 0 ? * 1 *)")),
    ("0 0 * * 6", Ok("cron(0 0 ? * 7 *)")),
    ("0 0 * * 0,7", Ok("cron(0 0 ? * 1 *)")),
    ("0 0 * * 5-7", Ok("cron(0 0 ? * 1,6-7 *)")),
    ("0 0 * * 1,3,5", Ok("cron(0 0 ? * 2,4,6 *)")),
    ("0 0 * * */2", Ok("cron(0 0 ? * 1,3,5,7 *)")),
    ("0 0 * * 1-5/2", Ok("cron(0 0 ? * 2,4,6 *)")),
    // `n/step` runs to 7, which is Sunday again.
    ("0 0 * * 1/3", Ok("cron(0 0 ? * 1-2,5 *)")),
    ("0 0 * * 0-7", Ok("cron(0 0 ? * 1-7 *)")),
    ("0 0 * * SUN,sat", Ok("cron(0 0 ? * SUN,SAT *)")),
    ("0 0 * * MON,3", Ok("cron(0 0 ? * 2,4 *)")),
    ("0 0 ? * MON", Ok("cron(0 0 ? * MON *)")),
    ("0 0 * * 5#3", Ok("cron(0 0 ? * 6#3 *)")),
    ("0 0 * * fri#3", Ok("cron(0 0 ? * FRI#3 *)")),
    ("0 0 * * 7#1", Ok("cron(0 0 ? * 1#1 *)")),
    // Day of month.
    ("0 12 1 * *", Ok("cron(0 12 1 * ? *)")),
    ("0 12 1,15 * *", Ok("cron(0 12 1,15 * ? *)")),
    ("0 12 1-10/3 * *", Ok("cron(0 12 1-10/3 * ? *)")),
    ("0 0 1 * ?", Ok("cron(0 0 1 * ? *)")),
    ("0 0 L * *", Ok("cron(0 0 L * ? *)")),
    ("0 0 15w * *", Ok("cron(0 0 15W * ? *)")),
    ("0 0 29 2 *", Ok("cron(0 0 29 2 ? *)")),
    // Months.
    ("0 0 1 jan,jul *", Ok("cron(0 0 1 JAN,JUL ? *)")),
    ("0 0 * 1-6/2 *", Ok("cron(0 0 * 1-6/2 ? *)")),
    ("0 0 * JUN-AUG *", Ok("cron(0 0 * JUN-AUG ? *)")),
    // Both day fields restricted.
    ("0 0 1 * MON", Err("use two Schedules")),
    ("0 0 */2 * 1", Err("use two Schedules")),
    ("0 0 L * 5#3", Err("use two Schedules")),
    // Out of range.
    (
        "60 * * * *",
        Err("minute field `60`: `60` is out of range 0-59"),
    ),
    (
        "0 24 * * *",
        Err("hour field `24`: `24` is out of range 0-23"),
    ),
    (
        "0 0 0 * *",
        Err("day-of-month field `0`: `0` is out of range 1-31"),
    ),
    ("0 0 32 * *", Err("day-of-month field `32`")),
    (
        "0 0 * 0 *",
        Err("month field `0`: `0` is out of range 1-12"),
    ),
    ("0 0 * 13 *", Err("month field `13`")),
    (
        "0 0 * * 8",
        Err("day-of-week field `8`: `8` is out of range 0-7"),
    ),
    ("0 0 * * 1-8", Err("day-of-week field `1-8`")),
    ("0 0 * * 1#6", Err("`n#k` needs k from 1 to 5")),
    ("0 0 32W * *", Err("needs n from 1 to 31")),
    // Malformed.
    (
        "*/0 * * * *",
        Err("minute field `*/0`: step `0` must be a number from 1 to 59"),
    ),
    ("*/ * * * *", Err("step `` must be a number")),
    ("0 */x * * *", Err("hour field `*/x`: step `x`")),
    (
        "30-10 * * * *",
        Err("minute field `30-10`: range `30-10` is reversed"),
    ),
    ("0 0 * * FRI-MON", Err("range `5-1` is reversed")),
    ("0,,5 * * * *", Err("minute field ``: empty list item")),
    ("0, * * * *", Err("empty list item")),
    ("a * * * *", Err("minute field `a`: `a` is not a number")),
    (
        "0 0 * foo *",
        Err("`foo` is not a number or a name JAN-DEC"),
    ),
    ("0 0 * * funday", Err("not a number or a name SUN-SAT")),
    (
        "0 0 * * 5L",
        Err("`L` (last weekday of the month) is not supported"),
    ),
    ("0 0 1,L * *", Err("must stand alone")),
    ("0 0 * * 1#2,3#1", Err("must stand alone")),
    ("0 0 30 2 *", Err("never fires")),
    ("0 0 31 4,6,9,11 *", Err("never fires")),
    // Field count.
    ("0 0 * *", Err("has 4 fields; expected five")),
    (
        "0 0 0 * * *",
        Err("a sixth field (seconds or year) is not accepted"),
    ),
    ("0 0 * * * * *", Err("has 7 fields")),
    ("", Err("has 0 fields")),
];

#[test]
fn cron_expressions_translate_or_fail_with_a_message() {
    assert!(CRON_CASES.len() >= 45);
    let mut failures = Vec::new();
    for (input, expected) in CRON_CASES {
        let got = translate_cron(input).map_err(|e| e.to_string());
        let ok = match (expected, &got) {
            (Ok(want), Ok(got)) => want == got,
            (Err(want), Err(got)) => got.contains(want),
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rates_translate_or_fail_with_a_message() {
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("1 minute", Ok("rate(1 minute)")),
        ("15 minutes", Ok("rate(15 minutes)")),
        ("1 hour", Ok("rate(1 hour)")),
        ("2 days", Ok("rate(2 days)")),
        ("0 minutes", Err("at least 1")),
        ("1 hours", Err("singular for 1")),
        ("5 hour", Err("plural otherwise")),
        ("30 seconds", Err("at most once a minute")),
        ("1.5 hours", Err("whole number")),
        ("fast", Err("expected two words")),
        ("3 weeks", Err("unknown unit")),
    ];
    for (input, expected) in cases {
        let got = translate_rate(input).map_err(|e| e.to_string());
        match (expected, &got) {
            (Ok(want), Ok(got)) => assert_eq!(want, got, "{input}"),
            (Err(want), Err(got)) => assert!(got.contains(want), "{input}: {got}"),
            _ => panic!("{input}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_schedule_has_exactly_one_of_cron_and_rate() {
    assert_eq!(
        schedule_expression(Some("0 3 * * *"), None).unwrap(),
        "cron(0 3 * * ? *)"
    );
    assert_eq!(
        schedule_expression(None, Some("1 hour")).unwrap(),
        "rate(1 hour)"
    );
    assert_eq!(
        schedule_expression(None, None),
        Err(CronError::NotExactlyOne)
    );
    assert_eq!(
        schedule_expression(Some("0 3 * * *"), Some("1 hour")),
        Err(CronError::NotExactlyOne)
    );
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn fires(cron: &str, after: &str, count: usize) -> Vec<String> {
    let timing = Timing::parse(Some(cron), None).unwrap();
    next_fire_times(&timing, ts("2000-01-01T00:00:00Z"), ts(after), count)
        .iter()
        .map(|t| t.to_string())
        .collect()
}

#[test]
fn daily_cron_fires_the_next_day_once_today_has_passed() {
    assert_eq!(
        fires("0 3 * * *", "2026-01-01T05:00:00Z", 2),
        ["2026-01-02T03:00:00Z", "2026-01-03T03:00:00Z"]
    );
}

#[test]
fn fire_times_are_strictly_after_the_given_time() {
    assert_eq!(
        fires("*/15 * * * *", "2026-01-01T05:07:30Z", 4),
        [
            "2026-01-01T05:15:00Z",
            "2026-01-01T05:30:00Z",
            "2026-01-01T05:45:00Z",
            "2026-01-01T06:00:00Z"
        ]
    );
    assert_eq!(
        fires("*/15 * * * *", "2026-01-01T05:15:00Z", 1),
        ["2026-01-01T05:30:00Z"]
    );
}

#[test]
fn weekday_schedule_skips_the_weekend() {
    // 2026-01-02 is a Friday.
    assert_eq!(
        fires("0 9 * * 1-5", "2026-01-02T10:00:00Z", 2),
        ["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]
    );
    // Sunday as 7 and as 0 alike.
    assert_eq!(
        fires("0 9 * * 7", "2026-01-02T10:00:00Z", 1),
        ["2026-01-04T09:00:00Z"]
    );
    assert_eq!(
        fires("0 9 * * 0", "2026-01-02T10:00:00Z", 1),
        ["2026-01-04T09:00:00Z"]
    );
}

#[test]
fn special_days_fire_on_the_right_dates() {
    assert_eq!(
        fires("0 0 L * *", "2026-02-01T00:00:00Z", 2),
        ["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"]
    );
    // Third Friday: January 2026 starts on a Thursday.
    assert_eq!(
        fires("30 12 * * 5#3", "2026-01-01T00:00:00Z", 2),
        ["2026-01-16T12:30:00Z", "2026-02-20T12:30:00Z"]
    );
    // 2026-02-15 is a Sunday: the nearest weekday is Monday the 16th.
    assert_eq!(
        fires("0 0 15W 2 *", "2026-01-01T00:00:00Z", 1),
        ["2026-02-16T00:00:00Z"]
    );
    // 2026-08-01 is a Saturday: the nearest weekday within August is Monday the 3rd.
    assert_eq!(
        fires("0 0 1W 8 *", "2026-01-01T00:00:00Z", 1),
        ["2026-08-03T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 29 2 *", "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
    assert_eq!(
        fires("@yearly", "2026-06-01T00:00:00Z", 1),
        ["2027-01-01T00:00:00Z"]
    );
}

#[test]
fn rate_fires_count_from_the_rules_creation() {
    let timing = Timing::parse(None, Some("15 minutes")).unwrap();
    let created = ts("2026-01-01T00:02:00Z");
    let times: Vec<String> = next_fire_times(&timing, created, ts("2026-01-01T01:07:00Z"), 3)
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(
        times,
        [
            "2026-01-01T01:17:00Z",
            "2026-01-01T01:32:00Z",
            "2026-01-01T01:47:00Z"
        ]
    );
    // Before the rule exists, the first fire is one period after its creation.
    let early = next_fire_times(&timing, created, ts("2025-12-31T00:00:00Z"), 1);
    assert_eq!(early, [ts("2026-01-01T00:17:00Z")]);
    // Exactly on a fire time, the next one follows.
    let day = Timing::parse(None, Some("1 day")).unwrap();
    let created = ts("2026-01-01T10:30:00Z");
    let on = next_fire_times(&day, created, ts("2026-01-03T10:30:00Z"), 1);
    assert_eq!(on, [ts("2026-01-04T10:30:00Z")]);
}
