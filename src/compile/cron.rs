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
        "cron expression `{0}` restricts both the day of month and the day of week; standard cron fires when either matches, which an EventBridge rule cannot express: use two Schedules, one with each day field and `*` in the other"
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

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

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

/// A fixed rate, in EventBridge's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    value: u32,
    unit: RateUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateUnit {
    Minute,
    Hour,
    Day,
}

impl Rate {
    /// Parses `<n> minute(s)|hour(s)|day(s)`, singular for 1 and plural otherwise, as
    /// EventBridge requires.
    pub fn parse(text: &str) -> Result<Rate, CronError> {
        let error = |reason: &str| CronError::Rate {
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = text.split_whitespace();
        let (Some(number), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(error("expected two words"));
        };
        if !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error("the value must be a whole number"));
        }
        let value: u32 = number
            .parse()
            .map_err(|_| error("the value is too large"))?;
        if value == 0 {
            return Err(error("the value must be at least 1"));
        }
        let (unit, plural) = match unit.to_ascii_lowercase().as_str() {
            "minute" => (RateUnit::Minute, false),
            "minutes" => (RateUnit::Minute, true),
            "hour" => (RateUnit::Hour, false),
            "hours" => (RateUnit::Hour, true),
            "day" => (RateUnit::Day, false),
            "days" => (RateUnit::Day, true),
            "second" | "seconds" => {
                return Err(error(
                    "EventBridge rules fire at most once a minute, so seconds are not a unit",
                ));
            }
            _ => return Err(error("unknown unit")),
        };
        if plural != (value != 1) {
            return Err(error(
                "the unit must be singular for 1 (`1 hour`) and plural otherwise (`5 hours`)",
            ));
        }
        Ok(Rate { value, unit })
    }

    /// `rate(15 minutes)`.
    pub fn expression(&self) -> String {
        let unit = match self.unit {
            RateUnit::Minute => "minute",
            RateUnit::Hour => "hour",
            RateUnit::Day => "day",
        };
        let plural = if self.value == 1 { "" } else { "s" };
        format!("rate({} {unit}{plural})", self.value)
    }

    /// The period in seconds.
    fn seconds(&self) -> i64 {
        let unit = match self.unit {
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86_400,
        };
        i64::from(self.value) * unit
    }

    /// `created + k·period` for k ≥ 1 (the rule starts counting when it is created), strictly
    /// after `after`.
    fn next_after(&self, created: Timestamp, after: Timestamp, count: usize) -> Vec<Timestamp> {
        let period = self.seconds();
        let elapsed = after.as_second() - created.as_second();
        let first = if elapsed < 0 { 1 } else { elapsed / period + 1 };
        (0..count as i64)
            .map_while(|k| {
                let offset = (first + k).checked_mul(period)?;
                created
                    .checked_add(jiff::SignedDuration::from_secs(offset))
                    .ok()
            })
            .collect()
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

/// One day field as parsed, before the two are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DayField {
    /// Whether the field restricts days (anything but `*` or `?`).
    restricted: bool,
    days: Days,
    /// The field in EventBridge's form.
    text: String,
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
        let (months, month_text) = plain_field(Field::Month, month, 1, 12, &MONTHS)?;
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

/// One list item, `*`, `n`, `a-b`, each optionally `/step`: its values as a bit mask, and
/// whether it was written with names only (kept as names in the output).
fn item_values(
    field: Field,
    item: &str,
    min: u8,
    max: u8,
    names: &[&str],
) -> Result<(u64, bool), CronError> {
    let error = |reason: String| CronError::Field {
        field,
        value: item.to_owned(),
        reason,
    };
    if item.is_empty() {
        return Err(error("empty list item (a stray or doubled `,`)".into()));
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            let step: u8 = number(step)
                .filter(|s| (1..=max).contains(s))
                .ok_or_else(|| error(format!("step `{step}` must be a number from 1 to {max}")))?;
            (base, Some(step))
        }
        None => (item, None),
    };
    let value = |text: &str| -> Result<(u8, bool), CronError> {
        if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            // Month names count from 1, weekday names from 0 (Sunday).
            return Ok((index as u8 + min.min(1), true));
        }
        match number(text) {
            Some(n) if (min..=max).contains(&n) => Ok((n, false)),
            Some(n) => Err(error(format!("`{n}` is out of range {min}-{max}"))),
            None => Err(error(format!(
                "`{text}` is not a number{}",
                name_hint(names)
            ))),
        }
    };
    let (low, high, named) = if base == "*" {
        (min, max, false)
    } else if let Some((a, b)) = base.split_once('-') {
        let ((a, a_named), (b, b_named)) = (value(a)?, value(b)?);
        if a > b {
            return Err(error(format!(
                "range `{a}-{b}` is reversed; write the lower bound first"
            )));
        }
        (a, b, a_named && b_named)
    } else {
        let (n, named) = value(base)?;
        // `n/step` runs from n to the end of the field, as in cronie and EventBridge.
        (n, if step.is_some() { max } else { n }, named)
    };
    let step = step.unwrap_or(1);
    let mask = (low..=high)
        .step_by(usize::from(step))
        .fold(0u64, |mask, n| mask | 1 << n);
    Ok((mask, named && step == 1))
}

fn name_hint(names: &[&str]) -> String {
    match (names.first(), names.last()) {
        (Some(first), Some(last)) => format!(" or a name {first}-{last}"),
        _ => String::new(),
    }
}

fn number(text: &str) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A minute, hour or month field: EventBridge reads these like standard cron, so the text
/// passes through (names upper-cased) once checked.
fn plain_field(
    field: Field,
    text: &str,
    min: u8,
    max: u8,
    names: &[&str],
) -> Result<(u64, String), CronError> {
    let mut mask = 0;
    for item in text.split(',') {
        mask |= item_values(field, item, min, max, names)?.0;
    }
    Ok((mask, text.to_ascii_uppercase()))
}

fn field_error(field: Field, value: &str, reason: &str) -> CronError {
    CronError::Field {
        field,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn day_of_month(text: &str) -> Result<DayField, CronError> {
    let field = Field::DayOfMonth;
    let upper = text.to_ascii_uppercase();
    if upper == "*" || upper == "?" {
        return Ok(DayField {
            restricted: false,
            days: Days::Every,
            text: "*".into(),
        });
    }
    if upper == "L" {
        return Ok(DayField {
            restricted: true,
            days: Days::LastOfMonth,
            text: upper,
        });
    }
    if let Some(day) = upper.strip_suffix('W') {
        let n = number(day)
            .filter(|n| (1..=31).contains(n))
            .ok_or_else(|| {
                field_error(
                    field,
                    text,
                    "`nW` (weekday nearest day n) needs n from 1 to 31",
                )
            })?;
        return Ok(DayField {
            restricted: true,
            days: Days::NearestWeekday(n),
            text: upper,
        });
    }
    if upper.contains(['L', 'W']) {
        return Err(field_error(
            field,
            text,
            "`L` (last day) and `nW` (nearest weekday) must stand alone in the field",
        ));
    }
    let (mask, text) = plain_field(field, text, 1, 31, &[])?;
    Ok(DayField {
        restricted: true,
        days: Days::OfMonth(mask),
        text,
    })
}

fn day_of_week(text: &str) -> Result<DayField, CronError> {
    let field = Field::DayOfWeek;
    let upper = text.to_ascii_uppercase();
    if upper == "*" || upper == "?" {
        return Ok(DayField {
            restricted: false,
            days: Days::Every,
            text: "?".into(),
        });
    }
    if upper.ends_with('L') {
        return Err(field_error(
            field,
            text,
            "`L` (last weekday of the month) is not supported; use `n#k` for the k-th weekday n",
        ));
    }
    if let Some((day, nth)) = upper.split_once('#') {
        if upper.contains([',', '-', '/', '*']) {
            return Err(field_error(
                field,
                text,
                "`n#k` (k-th weekday n) must stand alone in the field, with a single weekday",
            ));
        }
        let k = number(nth)
            .filter(|k| (1..=5).contains(k))
            .ok_or_else(|| field_error(field, text, "`n#k` needs k from 1 to 5"))?;
        let (mask, named) = item_values(field, day, 0, 7, &WEEKDAYS)?;
        let weekday = (mask.trailing_zeros() % 7) as u8;
        let translated = if named {
            format!("{day}#{k}")
        } else {
            format!("{}#{k}", weekday + 1)
        };
        return Ok(DayField {
            restricted: true,
            days: Days::NthWeekday(weekday, k),
            text: translated,
        });
    }
    let mut mask = 0u64;
    let mut all_named = true;
    for item in text.split(',') {
        let (values, named) = item_values(field, item, 0, 7, &WEEKDAYS)?;
        mask |= values;
        all_named &= named;
    }
    // 7 is Sunday too.
    if mask & (1 << 7) != 0 {
        mask = (mask & !(1 << 7)) | 1;
    }
    let translated = if all_named {
        upper
    } else {
        eventbridge_weekdays(mask)
    };
    Ok(DayField {
        restricted: true,
        days: Days::OfWeek(mask),
        text: translated,
    })
}

/// Weekdays (bit 0 = Sunday) as EventBridge numbers (1 = Sunday), consecutive days as ranges.
/// Written out rather than with `/`, which EventBridge's day-of-week field lacks.
fn eventbridge_weekdays(mask: u64) -> String {
    let days: Vec<u32> = bits(mask).map(|d| d + 1).collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1] == days[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => days[i].to_string(),
            _ => format!("{}-{}", days[i], days[j]),
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
