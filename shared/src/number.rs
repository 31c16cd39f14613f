//! Exact decimals: JSON number text → digits, and the Korean `price` format of SPEC 2.1.
//!
//! Money never goes through `f64`: a number is kept as its decimal digits and a scale, and
//! rounding is done on those digits.

/// Numbers with more integer digits than this are refused (they are not money, and an
/// exponent like `1e999999999` must not allocate a billion zeros).
const MAX_INTEGER_DIGITS: i64 = 64;

/// Fraction digits kept by [`price`].
const PRICE_FRACTION_DIGITS: usize = 3;

/// Why a text is not an acceptable decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("not a decimal number: {0:?}")]
    Syntax(String),
    #[error("number out of range: {0:?}")]
    Range(String),
}

/// An exact decimal: `(-1)^negative × digits × 10^-scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// ASCII digits without leading zeros; empty means zero.
    digits: Vec<u8>,
    scale: i64,
}

impl Decimal {
    /// Parses a JSON number literal (`-12`, `59000.00`, `1.5e3`, `1E-2`).
    pub fn parse(text: &str) -> Result<Self, NumberError> {
        let syntax = || NumberError::Syntax(text.to_owned());
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            pos += 1;
        }
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &bytes[int_start..pos];
        if int_digits.is_empty() || (int_digits.len() > 1 && int_digits[0] == b'0') {
            return Err(syntax());
        }
        let mut frac_digits: &[u8] = &[];
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &bytes[start..pos];
            if frac_digits.is_empty() {
                return Err(syntax());
            }
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(pos), Some(b'e' | b'E')) {
            pos += 1;
            let exp_negative = match bytes.get(pos) {
                Some(b'-') => {
                    pos += 1;
                    true
                }
                Some(b'+') => {
                    pos += 1;
                    false
                }
                _ => false,
            };
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if start == pos {
                return Err(syntax());
            }
            let magnitude: i64 = text[start..pos]
                .parse()
                .map_err(|_| NumberError::Range(text.to_owned()))?;
            exponent = if exp_negative { -magnitude } else { magnitude };
        }
        if pos != bytes.len() {
            return Err(syntax());
        }

        let mut digits: Vec<u8> = int_digits.iter().chain(frac_digits).copied().collect();
        let leading_zeros = digits.iter().take_while(|d| **d == b'0').count();
        digits.drain(..leading_zeros);
        let scale = (frac_digits.len() as i64)
            .checked_sub(exponent)
            .ok_or_else(|| NumberError::Range(text.to_owned()))?;
        if digits.len() as i64 - scale > MAX_INTEGER_DIGITS {
            return Err(NumberError::Range(text.to_owned()));
        }
        Ok(Decimal {
            negative,
            digits,
            scale,
        })
    }

    /// The value zero.
    pub fn zero() -> Self {
        Decimal::from(0)
    }

    /// Rounds half-even to at most `places` fraction digits and returns
    /// `(negative, integer digits, fraction digits without trailing zeros)`.
    fn round(&self, places: usize) -> (bool, Vec<u8>, Vec<u8>) {
        let len = self.digits.len() as i64;
        // Tiny values (below 10^-(places+1)) round to zero; skip building their zeros.
        if self.digits.is_empty() || self.scale - len > places as i64 {
            return (false, vec![b'0'], Vec::new());
        }
        // Split into integer and fraction digits (scale is bounded here).
        let (mut int, frac): (Vec<u8>, Vec<u8>) = if self.scale <= 0 {
            let mut int = self.digits.clone();
            int.extend(std::iter::repeat_n(b'0', (-self.scale) as usize));
            (int, Vec::new())
        } else if len > self.scale {
            let cut = (len - self.scale) as usize;
            (self.digits[..cut].to_vec(), self.digits[cut..].to_vec())
        } else {
            let mut frac = vec![b'0'; (self.scale - len) as usize];
            frac.extend_from_slice(&self.digits);
            (vec![b'0'], frac)
        };

        let mut kept: Vec<u8> = frac.iter().take(places).copied().collect();
        let rest = frac.get(places..).unwrap_or(&[]);
        let round_up = match rest.first() {
            None => false,
            Some(d) if *d > b'5' => true,
            Some(d) if *d < b'5' => false,
            Some(_) => {
                let beyond_half = rest[1..].iter().any(|d| *d != b'0');
                let last = kept.last().or(int.last()).copied().unwrap_or(b'0');
                beyond_half || (last - b'0') % 2 == 1
            }
        };
        if round_up {
            let mut carry = true;
            for d in kept.iter_mut().rev().chain(int.iter_mut().rev()) {
                if *d == b'9' {
                    *d = b'0';
                } else {
                    *d += 1;
                    carry = false;
                    break;
                }
            }
            if carry {
                int.insert(0, b'1');
            }
        }
        while kept.last() == Some(&b'0') {
            kept.pop();
        }
        let leading = int.iter().take_while(|d| **d == b'0').count();
        int.drain(..leading.min(int.len() - 1));
        let is_zero = int == [b'0'] && kept.is_empty();
        (self.negative && !is_zero, int, kept)
    }
}

impl From<i64> for Decimal {
    fn from(value: i64) -> Self {
        let digits = if value == 0 {
            Vec::new()
        } else {
            value.unsigned_abs().to_string().into_bytes()
        };
        Decimal {
            negative: value < 0,
            digits,
            scale: 0,
        }
    }
}

/// The Korean number format of SPEC 2.1: `,` every three integer digits, at most three
/// fraction digits (half-even), trailing zeros dropped. `59000.00` → `59,000`.
pub fn price(value: &Decimal) -> String {
    let (negative, int, frac) = value.round(PRICE_FRACTION_DIGITS);
    let mut out = String::with_capacity(int.len() + int.len() / 3 + frac.len() + 2);
    if negative {
        out.push('-');
    }
    for (i, d) in int.iter().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(char::from(*d));
    }
    if !frac.is_empty() {
        out.push('.');
        out.extend(frac.iter().map(|d| char::from(*d)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> String {
        price(&Decimal::parse(text).expect(text))
    }

    #[test]
    fn price_matches_the_korean_number_format() {
        let cases = [
            ("59000.00", "59,000"),
            ("59000", "59,000"),
            ("150000", "150,000"),
            ("1234.5", "1,234.5"),
            ("0.0015", "0.002"),
            ("0.0025", "0.002"),
            ("0.00251", "0.003"),
            ("0.0005", "0"),
            ("0.0004999", "0"),
            ("1e3", "1,000"),
            ("1E+3", "1,000"),
            ("1.5e-1", "0.15"),
            ("0", "0"),
            ("0.000", "0"),
            ("999.9995", "1,000"),
            ("999.9985", "999.998"),
            ("-1234567.891", "-1,234,567.891"),
            ("-0.0001", "0"),
            ("12", "12"),
            ("123", "123"),
            ("1234", "1,234"),
            (
                "123456789012345678901234567890",
                "123,456,789,012,345,678,901,234,567,890",
            ),
            ("5e-400", "0"),
        ];
        for (input, expected) in cases {
            assert_eq!(p(input), expected, "price({input})");
        }
    }

    #[test]
    fn integers_convert_exactly() {
        assert_eq!(price(&Decimal::from(5000)), "5,000");
        assert_eq!(price(&Decimal::from(0)), "0");
        assert_eq!(price(&Decimal::from(-1234)), "-1,234");
        assert_eq!(
            price(&Decimal::from(i64::MIN)),
            "-9,223,372,036,854,775,808"
        );
    }

    #[test]
    fn parse_rejects_what_is_not_a_json_number() {
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "abc", "1,000", " 1", "1 ", "+1", "NaN",
        ] {
            assert!(
                matches!(Decimal::parse(bad), Err(NumberError::Syntax(_))),
                "{bad:?} should be a syntax error"
            );
        }
    }

    #[test]
    fn parse_refuses_huge_exponents_without_allocating() {
        assert!(matches!(
            Decimal::parse("1e999999999"),
            Err(NumberError::Range(_))
        ));
        assert!(matches!(
            Decimal::parse("1e99999999999999999999"),
            Err(NumberError::Range(_))
        ));
        assert_eq!(p("1e-999999999"), "0");
    }
}
