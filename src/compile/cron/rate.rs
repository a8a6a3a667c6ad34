//! Rate expressions (`15 minutes`): EventBridge's units and its singular/plural rule.

use jiff::Timestamp;

use super::CronError;

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
    pub(super) fn next_after(
        &self,
        created: Timestamp,
        after: Timestamp,
        count: usize,
    ) -> Vec<Timestamp> {
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
