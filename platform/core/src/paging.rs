//! Keyset paging: page sizes and opaque, tamper-evident page tokens.
//!
//! A token names the last id a page returned; the next page starts after it
//! (`where id > $cursor order by id`), so inserts and deletes between pages
//! never make a walk repeat or skip a row, and deep pages cost what the first
//! one does. Tokens are authenticated with HMAC-SHA256 over the cursor and a
//! *scope* (the method plus any filter), so a token edited by hand, or taken
//! from another method or another filter, is rejected instead of silently
//! starting somewhere else.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::validation::FieldViolation;

/// Page size when the request asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page; larger requests are clamped to it.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Longest page token looked at; anything longer was not issued by us.
const MAX_TOKEN_BYTES: usize = 2048;
const TOKEN_VERSION: u8 = 1;
/// Version byte of tokens whose payload is a sorted walk's cursor.
const BYTES_VERSION: u8 = 2;
const MAC_LEN: usize = 16;
const TOKEN_LEN: usize = 1 + 8 + MAC_LEN;

/// Interprets a request's `page_size`: 0 is the default, above the maximum is
/// clamped, negative is a violation of `field`.
pub fn page_size(requested: i32, field: &str) -> Result<u32, FieldViolation> {
    page_size_or(requested, DEFAULT_PAGE_SIZE, field)
}

/// [`page_size`] with a default of the method's own (feeds read in larger
/// pages than lists).
pub fn page_size_or(requested: i32, default: u32, field: &str) -> Result<u32, FieldViolation> {
    match u32::try_from(requested) {
        Err(_) => Err(FieldViolation::new(field, "must not be negative")),
        Ok(0) => Ok(default),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Most bytes of items one page carries: a page ends early (with a token
/// to go on) rather than grow past it, so every answer stays under 4 MiB,
/// the default message limit of gRPC clients in every language, whatever
/// the data.
pub const MAX_PAGE_BYTES: usize = 3 << 20;

/// How many rows to fetch for a page of `size`: one more than the page, so
/// the extra row tells whether another page follows without a count.
pub fn overfetch(size: u32) -> i64 {
    i64::from(size) + 1
}

/// One page of a keyset walk: its items, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items, in walk order.
    pub items: Vec<T>,
    /// Whether at least one more item follows the page.
    pub more: bool,
}

impl<T> Page<T> {
    /// The page of `size` made from `rows` fetched with [`overfetch`].
    pub fn from_overfetched(mut rows: Vec<T>, size: u32) -> Self {
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        Self { items: rows, more }
    }

    /// Ends the page after as many items as fit in `budget` bytes (by
    /// `size`), at least one; a page cut short has more to follow.
    pub fn cut_to_bytes(&mut self, budget: usize, size: impl Fn(&T) -> usize) {
        let mut total = 0;
        let fits = self.items.iter().position(|item| {
            total += size(item);
            total > budget
        });
        if let Some(end) = fits {
            self.items.truncate(end.max(1));
            self.more = true;
        }
    }

    /// The same page with each item converted by `f`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), more: self.more }
    }

    /// The same page with each item converted by `f`, or the first failure.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page { items: self.items.into_iter().map(f).collect::<Result<_, E>>()?, more: self.more })
    }
}

/// A page token that was not issued for this scope, or was altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid page token")]
pub struct InvalidPageToken;

/// Signs and verifies page tokens with a service's secret key.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens { key: <redacted> }")
    }
}

impl PageTokens {
    /// A codec using `key`; every instance of one service must share it so a
    /// token survives restarts and works on any replica.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(&(scope.len() as u64).to_be_bytes());
        mac.update(scope.as_bytes());
        mac.update(payload);
        mac
    }

    /// The token for the page that starts after `last_id`, within `scope`.
    pub fn encode(&self, scope: &str, last_id: i64) -> String {
        let mut raw = Vec::with_capacity(TOKEN_LEN);
        raw.push(TOKEN_VERSION);
        raw.extend_from_slice(&last_id.to_be_bytes());
        let tag = self.mac(scope, &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// A token carrying `payload` (a sorted walk's cursor), within `scope`.
    pub fn encode_bytes(&self, scope: &str, payload: &[u8]) -> String {
        let mut raw = Vec::with_capacity(1 + payload.len() + MAC_LEN);
        raw.push(BYTES_VERSION);
        raw.extend_from_slice(payload);
        let tag = self.mac(scope, &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The payload of a token made by [`Self::encode_bytes`] for `scope`;
    /// `None` for an empty token (the first page).
    pub fn decode_bytes(&self, scope: &str, token: &str) -> Result<Option<Vec<u8>>, InvalidPageToken> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidPageToken);
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidPageToken)?;
        if raw.len() < 1 + MAC_LEN || raw[0] != BYTES_VERSION {
            return Err(InvalidPageToken);
        }
        let (signed, tag) = raw.split_at(raw.len() - MAC_LEN);
        self.mac(scope, signed).verify_truncated_left(tag).map_err(|_| InvalidPageToken)?;
        Ok(Some(signed[1..].to_vec()))
    }

    /// The token of the page after `page` (keyed by `cursor` of its last
    /// item), or the empty token when `page` is the last.
    pub fn next_token<T>(&self, scope: &str, page: &Page<T>, cursor: impl Fn(&T) -> i64) -> String {
        match page.items.last() {
            Some(last) if page.more => self.encode(scope, cursor(last)),
            _ => String::new(),
        }
    }

    /// The cursor of `token` if it was issued for `scope`; `None` for an
    /// empty token (the first page).
    pub fn decode(&self, scope: &str, token: &str) -> Result<Option<i64>, InvalidPageToken> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidPageToken);
        }
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidPageToken)?;
        if raw.len() != TOKEN_LEN || raw[0] != TOKEN_VERSION {
            return Err(InvalidPageToken);
        }
        let (payload, tag) = raw.split_at(1 + 8);
        self.mac(scope, payload).verify_truncated_left(tag).map_err(|_| InvalidPageToken)?;
        let cursor = i64::from_be_bytes(payload[1..].try_into().map_err(|_| InvalidPageToken)?);
        Ok(Some(cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> PageTokens {
        PageTokens::new(b"test key".to_vec())
    }

    #[test]
    fn page_size_defaults_clamps_and_rejects_negative() {
        assert_eq!(page_size(0, "page_size"), Ok(50));
        assert_eq!(page_size(7, "page_size"), Ok(7));
        assert_eq!(page_size(5000, "page_size"), Ok(1000));
        assert!(page_size(-1, "page_size").is_err());
    }

    #[test]
    fn a_page_is_cut_from_one_row_too_many() {
        assert_eq!(overfetch(50), 51);
        assert_eq!(Page::from_overfetched(vec![1, 2, 3], 2), Page { items: vec![1, 2], more: true });
        assert_eq!(Page::from_overfetched(vec![1, 2], 2), Page { items: vec![1, 2], more: false });
        let tokens = codec();
        assert_eq!(tokens.next_token("s", &Page { items: vec![7], more: false }, |i| *i), "");
        let next = tokens.next_token("s", &Page { items: vec![5, 7], more: true }, |i| *i);
        assert_eq!(tokens.decode("s", &next), Ok(Some(7)));
    }

    #[test]
    fn a_page_ends_early_rather_than_outgrow_its_byte_budget() {
        let mut page = Page { items: vec![40, 40, 40], more: false };
        page.cut_to_bytes(100, |n| *n);
        assert_eq!(page, Page { items: vec![40, 40], more: true });
        let mut huge = Page { items: vec![500, 1], more: false };
        huge.cut_to_bytes(100, |n| *n);
        assert_eq!(huge, Page { items: vec![500], more: true }, "one item always fits");
        let mut small = Page { items: vec![1, 2], more: false };
        small.cut_to_bytes(100, |n| *n);
        assert_eq!(small, Page { items: vec![1, 2], more: false });
    }

    #[test]
    fn token_round_trips_within_its_scope() {
        let token = codec().encode("ListPatients", 42);
        assert_eq!(codec().decode("ListPatients", &token), Ok(Some(42)));
        assert_eq!(codec().decode("ListPatients", ""), Ok(None));
    }

    #[test]
    fn token_is_rejected_in_another_scope_or_with_another_key() {
        let token = codec().encode("ListPatients", 42);
        assert_eq!(codec().decode("ListStudies", &token), Err(InvalidPageToken));
        assert_eq!(PageTokens::new(b"other".to_vec()).decode("ListPatients", &token), Err(InvalidPageToken));
    }

    #[test]
    fn altered_or_garbage_tokens_are_rejected() {
        let token = codec().encode("s", 42);
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[8] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(raw);
        for bad in [altered.as_str(), "x", "not a token!", &token[..token.len() - 1]] {
            assert_eq!(codec().decode("s", bad), Err(InvalidPageToken), "{bad}");
        }
    }
}
