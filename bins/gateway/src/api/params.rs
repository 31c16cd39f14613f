//! Query and path parameters, parsed by hand so that every bad value gets the `C002`
//! envelope with a message naming the parameter (an extractor's rejection would not).

use axum::http::Uri;

use super::error::ApiError;

/// Largest page size.
pub const MAX_SIZE: u32 = 100;
/// Page size when none is given.
pub const DEFAULT_SIZE: u32 = 20;

/// A listing's parameters: offset paging (`page`, 1-based) or keyset paging (`before`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub size: u32,
    pub paging: Paging,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    Page(u32),
    /// The keyset: rows older than this id (`None`: the newest).
    Before(Option<i64>),
}

/// The query's value of `name` (the last one when repeated).
fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn pairs(uri: &Uri) -> Vec<(String, String)> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::InvalidInput(format!("Parameter '{name}' must be a number")))
}

/// `page`/`size`/`before` of a list request. `cursor` = whether the keyset form was asked
/// for (a `before` parameter, even empty, or `cursor=true`).
pub fn listing(uri: &Uri) -> Result<Listing, ApiError> {
    let pairs = pairs(uri);
    let size = match value(&pairs, "size") {
        None => DEFAULT_SIZE,
        Some(text) => number::<i64>("size", text)?
            .try_into()
            .ok()
            .filter(|s| (1..=MAX_SIZE).contains(s))
            .ok_or_else(|| {
                ApiError::InvalidInput(format!("Parameter 'size' must be from 1 to {MAX_SIZE}"))
            })?,
    };
    let page = value(&pairs, "page");
    let before = value(&pairs, "before");
    let paging = match (page, before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidInput(
                "Parameters 'page' and 'before' cannot be combined".into(),
            ));
        }
        (_, Some("")) => Paging::Before(None),
        (_, Some(text)) => Paging::Before(Some(number("before", text)?)),
        (None, None) => Paging::Page(1),
        (Some(text), None) => Paging::Page(
            number::<i64>("page", text)?
                .try_into()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| {
                    ApiError::InvalidInput("Parameter 'page' must be 1 or more".into())
                })?,
        ),
    };
    Ok(Listing { size, paging })
}

/// The `by` of `unread/count` (`None`: the bare count).
pub fn count_by(uri: &Uri) -> Result<Option<&'static str>, ApiError> {
    match value(&pairs(uri), "by") {
        None => Ok(None),
        Some("category") => Ok(Some("category")),
        Some(_) => Err(ApiError::InvalidInput(
            "Parameter 'by' must be 'category'".into(),
        )),
    }
}

/// A notification id from the path.
pub fn id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::InvalidInput("Parameter 'id' must be a positive number".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(query: &str) -> Result<Listing, ApiError> {
        listing(&format!("/x?{query}").parse().unwrap())
    }

    #[test]
    fn paging_parameters_are_checked() {
        assert_eq!(
            list(""),
            Ok(Listing {
                size: 20,
                paging: Paging::Page(1)
            })
        );
        assert_eq!(list("page=3&size=100").unwrap().paging, Paging::Page(3));
        assert_eq!(
            list("before=42&size=5").unwrap().paging,
            Paging::Before(Some(42))
        );
        assert_eq!(list("before=").unwrap().paging, Paging::Before(None));
        for bad in [
            "page=0",
            "page=-1",
            "page=x",
            "size=0",
            "size=101",
            "size=1e3",
            "before=abc",
            "page=1&before=2",
            "page=99999999999999999999",
        ] {
            let err = list(bad).unwrap_err();
            assert_eq!(err.code(), "C002", "{bad}: {err}");
        }
        assert!(list("size=101").unwrap_err().to_string().contains("size"));
    }

    #[test]
    fn ids_are_positive_numbers() {
        assert_eq!(id("7"), Ok(7));
        for bad in ["0", "-3", "abc", "1.5", "99999999999999999999", ""] {
            assert_eq!(id(bad).unwrap_err().code(), "C002", "{bad}");
        }
    }
}
