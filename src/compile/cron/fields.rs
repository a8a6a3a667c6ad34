//! The fields of a cron expression: each checked against its range and names, turned into the
//! set of values it selects, and written the way EventBridge reads that field.

use super::{CronError, Days, Field, bits};

pub(super) const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// Bits 1-31.
const ALL_DAYS_OF_MONTH: u64 = 0xFFFF_FFFE;
/// Bits 0-6 (Sunday to Saturday).
const ALL_WEEKDAYS: u64 = 0x7F;

/// One day field as parsed, before the two are combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DayField {
    /// Whether the field restricts days (anything but `*` or `?`).
    pub(super) restricted: bool,
    pub(super) days: Days,
    /// The field in EventBridge's form.
    pub(super) text: String,
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
pub(super) fn plain_field(
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

pub(super) fn day_of_month(text: &str) -> Result<DayField, CronError> {
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
    // `*/1` is every day, and cron counts a field starting with `*` as unrestricted.
    let every = text.starts_with('*') && mask == ALL_DAYS_OF_MONTH;
    Ok(DayField {
        restricted: !every,
        days: if every {
            Days::Every
        } else {
            Days::OfMonth(mask)
        },
        text,
    })
}

pub(super) fn day_of_week(text: &str) -> Result<DayField, CronError> {
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
    if text.starts_with('*') && mask == ALL_WEEKDAYS {
        return Ok(DayField {
            restricted: false,
            days: Days::Every,
            text: "?".into(),
        });
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
