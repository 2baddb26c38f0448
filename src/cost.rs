//! What an answer cost, from its `Usage` and the operator's price table (`pricing`, CONFIG.md
//! "Pricing and cost budgets"), in whole micro-dollars.
//!
//! Prices are US dollars per million tokens. At configure time each is taken to the nearest
//! micro-dollar per million tokens (`0.075` → 75 000), so all arithmetic after that is
//! integer and exact. The cost of an answer is
//!
//! ```text
//! numerator = uncached_input × input + cache_read × cached_input + cache_write × cache_write
//!           + completion × output                    (µ$ per million tokens × tokens, u128)
//! cost_µ$   = floor((numerator + 500 000) / 1 000 000)        (half up, once per answer)
//! ```
//!
//! where `uncached_input = prompt − cache_read − cache_write` (Usage counts cached tokens as
//! parts of the prompt), `cached_input` and `cache_write` fall back to `input` when the model
//! has no such price, and reasoning tokens are output tokens (part of `completion`). Rounding
//! happens once, on the whole answer: ten answers of 0.4 µ$ cost 0 µ$ each. A model with no
//! price costs 0 and is reported as unpriced.

use std::collections::BTreeMap;

use crate::usage::Usage;

/// Micro-dollars per million tokens, exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    /// Input read from a prompt cache; `input` when None.
    pub cached_input: Option<u64>,
    /// Input written to a prompt cache; `input` when None.
    pub cache_write: Option<u64>,
}

/// The highest price accepted, in dollars per million tokens: far above any real price, and
/// low enough that no sum of `u64` token counts times prices overflows a `u128`.
pub const MAX_USD_PER_MILLION: f64 = 1_000_000.0;

/// The largest budget accepted, in dollars (its micro-dollars stay exact in an f64).
pub const MAX_BUDGET_USD: f64 = 1_000_000_000.0;

/// Why a configured amount of dollars was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceError {
    NotFinite,
    Negative,
    /// Larger than the maximum given.
    TooLarge(u64),
}

impl std::fmt::Display for PriceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriceError::NotFinite => f.write_str("must be a finite number"),
            PriceError::Negative => f.write_str("must not be negative"),
            PriceError::TooLarge(max) => write!(f, "must be at most {max}"),
        }
    }
}

/// A price in dollars per million tokens to whole micro-dollars per million, to the nearest
/// (halves away from zero: `f64::round`); at most `MAX_USD_PER_MILLION`.
pub fn micros(usd: f64) -> Result<u64, PriceError> {
    micros_up_to(usd, MAX_USD_PER_MILLION)
}

/// A budget in dollars to whole micro-dollars, to the nearest; at most `MAX_BUDGET_USD`.
pub fn budget_micros(usd: f64) -> Result<u64, PriceError> {
    micros_up_to(usd, MAX_BUDGET_USD)
}

fn micros_up_to(usd: f64, max: f64) -> Result<u64, PriceError> {
    if !usd.is_finite() {
        return Err(PriceError::NotFinite);
    }
    if usd < 0.0 {
        return Err(PriceError::Negative);
    }
    if usd > max {
        return Err(PriceError::TooLarge(max as u64));
    }
    // At most 1e15: exact in f64 and in u64.
    Ok((usd * 1_000_000.0).round() as u64)
}

/// The cost of one answer in micro-dollars, rounded half up (see the module text).
pub fn cost_micros(usage: &Usage, price: &Price) -> u64 {
    let prompt = u128::from(usage.prompt_tokens);
    let cache_read = u128::from(usage.cache_read_tokens).min(prompt);
    let cache_write = u128::from(usage.cache_write_tokens).min(prompt - cache_read);
    let uncached = prompt - cache_read - cache_write;
    let input = u128::from(price.input);
    let numerator = uncached * input
        + cache_read * u128::from(price.cached_input.unwrap_or(price.input))
        + cache_write * u128::from(price.cache_write.unwrap_or(price.input))
        + u128::from(usage.completion_tokens) * u128::from(price.output);
    let micros = (numerator + 500_000) / 1_000_000;
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// Micro-dollars as a decimal string of dollars with six places (`123` → `0.000123`), as
/// the access log's `aigate.cost_usd` carries it.
pub fn usd_string(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// The price table, keyed by the provider's model name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

/// What one answer cost, and under which model name it was priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// The price table's key that priced it; None when neither name has a price.
    pub model: Option<String>,
    pub micros: u64,
}

impl PriceTable {
    pub fn new(prices: BTreeMap<String, Price>) -> Self {
        PriceTable { prices }
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    pub fn get(&self, model: &str) -> Option<&Price> {
        self.prices.get(model)
    }

    /// Prices an answer: under the model the answer names when the table has it (OpenAI
    /// answers name the snapshot that answered, `gpt-4o-mini-2024-07-18`, for a request of
    /// `gpt-4o-mini`), else under the model the request was sent upstream with. Neither
    /// priced: 0, unpriced.
    pub fn price(&self, usage: &Usage, answer_model: Option<&str>, sent_model: &str) -> Priced {
        let found = answer_model
            .and_then(|name| self.prices.get_key_value(name))
            .or_else(|| self.prices.get_key_value(sent_model));
        match found {
            Some((name, price)) => Priced {
                model: Some(name.clone()),
                micros: cost_micros(usage, price),
            },
            None => Priced {
                model: None,
                micros: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u64, completion: u64) -> Usage {
        Usage::new(prompt, completion)
    }

    fn price(input: f64, output: f64) -> Price {
        Price {
            input: micros(input).unwrap_or_default(),
            output: micros(output).unwrap_or_default(),
            ..Price::default()
        }
    }

    #[test]
    fn prices_convert_to_the_nearest_micro_dollar_per_million() {
        assert_eq!(micros(0.15), Ok(150_000));
        assert_eq!(micros(0.075), Ok(75_000));
        assert_eq!(micros(3.0), Ok(3_000_000));
        assert_eq!(micros(0.0), Ok(0));
        assert_eq!(micros(0.000_000_4), Ok(0));
        assert_eq!(micros(0.000_000_5), Ok(1));
        assert_eq!(micros(1_000_000.0), Ok(1_000_000_000_000));
        assert_eq!(micros(f64::NAN), Err(PriceError::NotFinite));
        assert_eq!(micros(f64::INFINITY), Err(PriceError::NotFinite));
        assert_eq!(micros(-0.01), Err(PriceError::Negative));
        assert_eq!(micros(1_000_000.5), Err(PriceError::TooLarge(1_000_000)));
        assert_eq!(budget_micros(25.0), Ok(25_000_000));
        assert_eq!(budget_micros(1e9), Ok(1_000_000_000_000_000));
        assert_eq!(
            budget_micros(1e9 + 1.0).map_err(|e| e.to_string()),
            Err("must be at most 1000000000".to_string())
        );
    }

    #[test]
    fn cost_is_exact_and_rounded_half_up_once_per_answer() {
        // gpt-4o-mini: 1000 × 0.15 + 500 × 0.60 = 150 + 300 = 450 µ$.
        assert_eq!(cost_micros(&usage(1000, 500), &price(0.15, 0.60)), 450);
        // 3 × 0.15 = 0.45 µ$ → 0; 4 × 0.15 = 0.6 µ$ → 1; exactly 0.5 µ$ → 1 (half up).
        assert_eq!(cost_micros(&usage(3, 0), &price(0.15, 0.60)), 0);
        assert_eq!(cost_micros(&usage(4, 0), &price(0.15, 0.60)), 1);
        assert_eq!(cost_micros(&usage(1, 0), &price(0.5, 0.0)), 1);
        assert_eq!(cost_micros(&usage(1, 0), &price(0.499_999, 0.0)), 0);
        // Once per answer: input 0.45 + output 0.3 = 0.75 → 1, not 0 + 0.
        assert_eq!(cost_micros(&usage(3, 1), &price(0.15, 0.30)), 1);
        assert_eq!(cost_micros(&usage(0, 0), &price(3.0, 15.0)), 0);
        assert_eq!(cost_micros(&usage(10, 10), &Price::default()), 0);
    }

    #[test]
    fn big_numbers_neither_overflow_nor_lose_precision() {
        let max = Price {
            input: micros(MAX_USD_PER_MILLION).unwrap_or_default(),
            output: micros(MAX_USD_PER_MILLION).unwrap_or_default(),
            cached_input: Some(micros(MAX_USD_PER_MILLION).unwrap_or_default()),
            cache_write: Some(micros(MAX_USD_PER_MILLION).unwrap_or_default()),
        };
        let huge = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
            total_tokens: u64::MAX,
            cache_read_tokens: u64::MAX / 3,
            cache_write_tokens: u64::MAX / 3,
            reasoning_tokens: 0,
        };
        assert_eq!(cost_micros(&huge, &max), u64::MAX, "saturates");
        // 10^12 tokens at $15/M = $15 000 000 = 1.5e13 µ$, exactly.
        assert_eq!(
            cost_micros(&usage(0, 1_000_000_000_000), &price(3.0, 15.0)),
            15_000_000_000_000
        );
        // A price with six decimals keeps them: 123 457 tokens × $1.234567/M
        // = 152 415.938119 µ$ → 152 416; × $0.000001/M = 0.123457 µ$ → 0.
        assert_eq!(
            cost_micros(&usage(123_457, 0), &price(1.234_567, 0.0)),
            152_416
        );
        assert_eq!(cost_micros(&usage(123_457, 0), &price(0.000_001, 0.0)), 0);
    }

    #[test]
    fn cache_tokens_use_their_prices_or_fall_back_to_input() {
        let sonnet = Price {
            input: micros(3.0).unwrap_or_default(),
            output: micros(15.0).unwrap_or_default(),
            cached_input: Some(micros(0.30).unwrap_or_default()),
            cache_write: Some(micros(3.75).unwrap_or_default()),
        };
        // 10 000 prompt tokens of which 6 000 read from and 2 000 written to the cache:
        // 2 000 × 3 + 6 000 × 0.3 + 2 000 × 3.75 + 1 000 × 15 = 6000 + 1800 + 7500 + 15000.
        let cached = Usage {
            cache_read_tokens: 6_000,
            cache_write_tokens: 2_000,
            reasoning_tokens: 400,
            ..usage(10_000, 1_000)
        };
        assert_eq!(cost_micros(&cached, &sonnet), 30_300);
        // Without cache prices every input token is an input token.
        assert_eq!(cost_micros(&cached, &price(3.0, 15.0)), 45_000);
        // Only one cache price: the other falls back.
        let read_only = Price {
            cached_input: Some(micros(0.30).unwrap_or_default()),
            ..price(3.0, 15.0)
        };
        assert_eq!(cost_micros(&cached, &read_only), 6000 + 1800 + 6000 + 15000);
        // Parts larger than the prompt are cut to it (never a negative uncached share).
        let confused = Usage {
            cache_read_tokens: 50_000,
            cache_write_tokens: 50_000,
            ..usage(10_000, 0)
        };
        assert_eq!(cost_micros(&confused, &sonnet), 3_000);
    }

    #[test]
    fn the_answer_model_wins_when_priced_else_the_model_sent() {
        let table = PriceTable::new(BTreeMap::from([
            ("gpt-4o-mini".to_string(), price(0.15, 0.60)),
            ("gpt-4o-mini-2024-07-18".to_string(), price(0.30, 1.20)),
        ]));
        let used = usage(1000, 500);
        let priced = |answer: Option<&str>, sent: &str| table.price(&used, answer, sent);
        assert_eq!(
            priced(Some("gpt-4o-mini-2024-07-18"), "gpt-4o-mini"),
            Priced {
                model: Some("gpt-4o-mini-2024-07-18".into()),
                micros: 900
            }
        );
        assert_eq!(
            priced(Some("gpt-4o-mini-2099-01-01"), "gpt-4o-mini"),
            Priced {
                model: Some("gpt-4o-mini".into()),
                micros: 450
            }
        );
        assert_eq!(priced(None, "gpt-4o-mini").micros, 450);
        assert_eq!(
            priced(Some("llama3"), "llama3"),
            Priced {
                model: None,
                micros: 0
            }
        );
        assert!(PriceTable::default().is_empty());
    }

    #[test]
    fn usd_strings_have_six_places() {
        assert_eq!(usd_string(0), "0.000000");
        assert_eq!(usd_string(123), "0.000123");
        assert_eq!(usd_string(25_000_000), "25.000000");
        assert_eq!(usd_string(1_234_567), "1.234567");
        assert_eq!(usd_string(u64::MAX), "18446744073709.551615");
    }
}
