//! Helpers for the settings every binary declares with clap's derive: each
//! setting has one declaration with its environment variable, default and
//! doc comment (the `--help` text).

use std::time::Duration;

/// Gives a shared setting (declared without a default, such as the listen
/// address) the default of one binary: `#[command(mut_arg(ID, default_to(..)))]`.
pub fn default_to(value: String) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| arg.required(false).default_value(value)
}

/// Parses a whole number of milliseconds (the `*_MS` settings).
pub fn millis(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected a whole number of milliseconds: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_are_whole_numbers() {
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(millis(" 0 "), Ok(Duration::ZERO));
        assert!(millis("1.5").is_err());
        assert!(millis("-1").is_err());
    }
}
