//! Schedule expressions: a Schedule's five-field cron or rate, checked and translated to the
//! form an EventBridge rule takes, and the times the rule will fire (for the status).
//!
//! Standard cron and EventBridge differ in ways that silently shift a schedule if copied
//! verbatim: EventBridge has a sixth (year) field, numbers days of the week 1-7 from Sunday
//! instead of 0-7, has no `/` in the day-of-week field, and needs `?` in one of the two day
//! fields. Standard cron fires when *either* day field matches if both are restricted, which
//! EventBridge cannot express, so such expressions are rejected rather than approximated.
//!
//! Accepted beyond the standard: `?` in a day field (any), `L` (last day of the month) and
//! `nW` (the weekday nearest day n) alone in the day of month, and `n#k` (the k-th weekday n
//! of the month) alone in the day of week — what EventBridge supports in those fields.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

mod fields;
mod rate;

use fields::{day_of_month, day_of_week, plain_field};
pub use rate::Rate;

/// Why a schedule expression cannot become an EventBridge rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "cron expression `{expression}` has {found} fields; expected five (minute hour day-of-month month day-of-week){hint}"
    )]
    FieldCount {
        expression: String,
        found: usize,
        hint: &'static str,
    },
    #[error(
        "cron shorthand `{0}` is not supported; use @yearly, @annually, @monthly, @weekly, @daily or @hourly"
    )]
    Shorthand(String),
    #[error("{field} field `{value}`: {reason}")]
    Field {
        field: Field,
        value: String,
        reason: String,
    },
    #[error(
        "cron expression `{0}` restricts both the day of month and the day of week, and an EventBridge rule accepts only one (standard cron fires when either matches): use two Schedules, one restricting each day field with `*` in the other"
    )]
    BothDays(String),
    #[error("cron expression `{0}` never fires: no selected month has the selected day of month")]
    NeverFires(String),
    #[error(
        "rate `{value}`: {reason}; expected a positive whole number and minute(s), hour(s) or day(s), e.g. `15 minutes`"
    )]
    Rate { value: String, reason: String },
    #[error("a schedule needs exactly one of a cron expression and a rate")]
    NotExactlyOne,
}

/// The five fields of a cron expression, named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// Checks a five-field cron expression (or shorthand) and returns the EventBridge form,
/// `cron(Minutes Hours Day-of-month Month Day-of-week Year)`.
pub fn translate_cron(expression: &str) -> Result<String, CronError> {
    Cron::parse(expression).map(|cron| cron.expression)
}

/// Checks a rate such as `15 minutes` and returns the EventBridge form, `rate(15 minutes)`.
pub fn translate_rate(rate: &str) -> Result<String, CronError> {
    Rate::parse(rate).map(|rate| rate.expression())
}

/// The EventBridge schedule expression of a Schedule's `spec.cron` or `spec.rate`.
pub fn schedule_expression(cron: Option<&str>, rate: Option<&str>) -> Result<String, CronError> {
    Timing::parse(cron, rate).map(|timing| timing.expression())
}

/// The next `count` fire times strictly after `after`, soonest first. A rate rule counts from
/// when it was created, so `created` anchors it; cron rules ignore it.
pub fn next_fire_times(
    timing: &Timing,
    created: Timestamp,
    after: Timestamp,
    count: usize,
) -> Vec<Timestamp> {
    match timing {
        Timing::Cron(cron) => {
            let mut times = Vec::with_capacity(count);
            let mut from = after;
            while times.len() < count {
                match cron.next_after(from) {
                    Some(next) => {
                        times.push(next);
                        from = next;
                    }
                    None => break,
                }
            }
            times
        }
        Timing::Rate(rate) => rate.next_after(created, after, count),
    }
}

/// When a Schedule fires: a parsed cron expression or rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timing {
    Cron(Cron),
    Rate(Rate),
}

impl Timing {
    /// Parses exactly one of `cron` and `rate`.
    pub fn parse(cron: Option<&str>, rate: Option<&str>) -> Result<Timing, CronError> {
        match (cron, rate) {
            (Some(cron), None) => Cron::parse(cron).map(Timing::Cron),
            (None, Some(rate)) => Rate::parse(rate).map(Timing::Rate),
            _ => Err(CronError::NotExactlyOne),
        }
    }

    /// The EventBridge schedule expression.
    pub fn expression(&self) -> String {
        match self {
            Timing::Cron(cron) => cron.expression.clone(),
            Timing::Rate(rate) => rate.expression(),
        }
    }
}

/// A parsed cron expression: the set of each field's values, and its EventBridge form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// Bit n set: minute n.
    minutes: u64,
    /// Bit n set: hour n.
    hours: u64,
    /// Bit n set: month n (1-12).
    months: u64,
    days: Days,
    expression: String,
}

/// Which days of a selected month fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Days {
    Every,
    /// Bit n set: day of month n.
    OfMonth(u64),
    LastOfMonth,
    /// The weekday (Monday to Friday) nearest day n, within the month.
    NearestWeekday(u8),
    /// Bit n set: weekday n, 0 = Sunday.
    OfWeek(u64),
    /// The k-th weekday n (0 = Sunday) of the month.
    NthWeekday(u8, u8),
}

impl Cron {
    /// Parses and checks a five-field expression or shorthand.
    pub fn parse(expression: &str) -> Result<Cron, CronError> {
        let trimmed = expression.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ if trimmed.starts_with('@') => {
                return Err(CronError::Shorthand(trimmed.to_owned()));
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            let hint = match fields.len() {
                6 => {
                    "; a sixth field (seconds or year) is not accepted: EventBridge fires at most once a minute and the year is always `*`"
                }
                _ => "",
            };
            return Err(CronError::FieldCount {
                expression: trimmed.to_owned(),
                found: fields.len(),
                hint,
            });
        };
        let (minutes, minute_text) = plain_field(Field::Minute, minute, 0, 59, &[])?;
        let (hours, hour_text) = plain_field(Field::Hour, hour, 0, 23, &[])?;
        let (months, month_text) = plain_field(Field::Month, month, 1, 12, &fields::MONTHS)?;
        let dom = day_of_month(dom)?;
        let dow = day_of_week(dow)?;
        let (days, dom_text, dow_text) = match (dom.restricted, dow.restricted) {
            (true, true) => return Err(CronError::BothDays(trimmed.to_owned())),
            (true, false) => (dom.days, dom.text, "?".to_owned()),
            (false, true) => (dow.days, "?".to_owned(), dow.text),
            (false, false) => (Days::Every, "*".to_owned(), "?".to_owned()),
        };
        if !can_fire(days, months) {
            return Err(CronError::NeverFires(trimmed.to_owned()));
        }
        Ok(Cron {
            minutes,
            hours,
            months,
            days,
            expression: format!(
                "cron({minute_text} {hour_text} {dom_text} {month_text} {dow_text} *)"
            ),
        })
    }

    /// The EventBridge schedule expression.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `after`, if one comes within a leap cycle.
    fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let start = TimeZone::UTC.to_datetime(after);
        let mut date = start.date();
        // Eight years cover the longest gap between leap days (around 2100).
        for _ in 0..(366 * 9) {
            if self.fires_on(date) {
                for hour in bits(self.hours) {
                    for minute in bits(self.minutes) {
                        let time = date.at(hour as i8, minute as i8, 0, 0);
                        let Ok(stamp) = TimeZone::UTC.to_timestamp(time) else {
                            continue;
                        };
                        if stamp > after {
                            return Some(stamp);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    fn fires_on(&self, date: Date) -> bool {
        if !has(self.months, date.month()) {
            return false;
        }
        let day = date.day();
        let last = date.days_in_month();
        let weekday = date.weekday().to_sunday_zero_offset();
        match self.days {
            Days::Every => true,
            Days::OfMonth(mask) => has(mask, day),
            Days::LastOfMonth => day == last,
            Days::NearestWeekday(n) => nearest_weekday(date, n) == Some(day),
            Days::OfWeek(mask) => has(mask, weekday),
            Days::NthWeekday(n, k) => weekday == n as i8 && (day - 1) / 7 + 1 == k as i8,
        }
    }
}

/// The day (Monday to Friday) nearest day `n` of `date`'s month, not leaving the month.
fn nearest_weekday(date: Date, n: u8) -> Option<i8> {
    let target = date
        .first_of_month()
        .checked_add(jiff::Span::new().days(i64::from(n) - 1))
        .ok()?;
    if target.month() != date.month() {
        return None;
    }
    let day = target.day();
    let last = target.days_in_month();
    Some(match target.weekday().to_sunday_zero_offset() {
        6 if day == 1 => day + 2,
        6 => day - 1,
        0 if day == last => day - 2,
        0 => day + 1,
        _ => day,
    })
}

/// Whether some selected month has the selected day, so the rule fires at all.
fn can_fire(days: Days, months: u64) -> bool {
    let earliest = match days {
        Days::OfMonth(mask) => mask.trailing_zeros() as i8,
        Days::NearestWeekday(n) => n as i8,
        _ => return true,
    };
    // Longest month length, counting February's leap day.
    const LONGEST: [i8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12).any(|m: i8| has(months, m) && earliest <= LONGEST[(m - 1) as usize])
}

fn has(mask: u64, n: i8) -> bool {
    (0..64).contains(&n) && mask & (1 << n) != 0
}

fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |n| mask & (1 << n) != 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
