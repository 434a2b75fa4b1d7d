//! Filters and orders turned into SQL, and keyset paging under any order.
//!
//! Each service declares its searchable fields ([`Field`]: name, SQL
//! expression, kind) and sortable ones ([`SortField`]). A parsed
//! [`crate::filter::Expr`] is checked against them into a [`Where`] (every
//! value typed and bound as a parameter, never spliced into the SQL), and an
//! `order_by` into an [`Order`] that always ends with `id`, so a page token
//! can carry the last row's sort values ([`Cursor`]) and the next page start
//! strictly after them: no repeats, no skips, at any depth, under any order.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder};

use crate::filter::{self, Expr, Literal, Op};
use clinic_core::{
    paging::{InvalidPageToken, PageTokens},
    validation::{FieldViolation, fold},
};

/// What a field holds, and so how it is compared.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Text compared by its folded key (case and accents ignored; see
    /// [`fold`]); the SQL expression is the stored key. A trailing `*` on the
    /// value means "starts with".
    Folded,
    /// A date: `"YYYY-MM-DD"`.
    Date,
    /// A point in time: `"2026-11-01T09:30:00Z"` (RFC 3339) or a date
    /// (midnight UTC).
    Timestamp,
    /// A whole number.
    Integer,
    /// An exact token among the values of a `text[]` column (an identifier
    /// `"system|value"`): only `=` (holds it) and `!=` (does not).
    Token,
    /// A closed vocabulary stored by name, ordered as listed (so `<` and
    /// `>` compare rank); values are accepted with or without `prefix`.
    Enum {
        /// The proto enum's value prefix (`URGENCY_LEVEL_`).
        prefix: &'static str,
        /// The stored names, lowest rank first.
        values: &'static [&'static str],
    },
}

/// A field a filter may name.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Its name in filters.
    pub name: &'static str,
    /// The SQL expression it stands for (a column of the queried table).
    pub sql: &'static str,
    /// What it holds.
    pub kind: Kind,
}

/// A value bound as a query parameter, and a page cursor's sort value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A date.
    Date(NaiveDate),
    /// A point in time.
    Time(DateTime<Utc>),
}

impl Value {
    fn push_bind(&self, qb: &mut QueryBuilder<Postgres>) {
        match self {
            Value::Text(s) => qb.push_bind(s.clone()),
            Value::Int(n) => qb.push_bind(*n),
            Value::Date(d) => qb.push_bind(*d),
            Value::Time(t) => qb.push_bind(*t),
        };
    }
}

/// A checked filter, ready to be written into a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// `lhs op value`.
    Cmp {
        /// SQL of the left side (a field's expression, or its rank).
        lhs: String,
        /// SQL operator.
        op: &'static str,
        /// The bound value.
        value: Value,
    },
    /// `lhs [not] like 'prefix%'`, the prefix escaped.
    Prefix {
        /// SQL of the stored key.
        lhs: String,
        /// The folded prefix, LIKE-escaped, with `%` appended.
        pattern: String,
        /// `!=`: does not start with.
        negated: bool,
    },
    /// The array `lhs` [does not] hold `token`.
    Contains {
        /// SQL of the `text[]` column.
        lhs: String,
        /// The exact token.
        token: String,
        /// `!=`: does not hold it.
        negated: bool,
    },
    /// Every one holds.
    And(Vec<Where>),
    /// At least one holds.
    Or(Vec<Where>),
    /// It does not hold.
    Not(Box<Where>),
}

impl Where {
    /// Whether an index on one of `indexed` (SQL expressions) can narrow the
    /// rows this filter reads: a comparison (`=`, `<`, `<=`, `>`, `>=`) or a
    /// prefix on one of them among the conditions of a conjunction, and so
    /// in every branch of a disjunction. `!=` and `NOT` never can.
    pub fn can_use_index(&self, indexed: &[&str]) -> bool {
        match self {
            Where::Cmp { lhs, op, .. } => *op != "<>" && indexed.contains(&lhs.as_str()),
            Where::Prefix { lhs, negated, .. } | Where::Contains { lhs, negated, .. } => {
                !negated && indexed.contains(&lhs.as_str())
            }
            Where::And(all) => all.iter().any(|w| w.can_use_index(indexed)),
            Where::Or(any) => !any.is_empty() && any.iter().all(|w| w.can_use_index(indexed)),
            Where::Not(_) => false,
        }
    }
}

/// The cost rule of filters: one that no index can narrow
/// ([`Where::can_use_index`]) makes a search that scans. Such searches run
/// under a statement timeout of their own, shorter than the service's, and
/// fail with INVALID_ARGUMENT (`FILTER_TOO_COSTLY`) past it; and only a few
/// run at once - [`SCANS_AT_ONCE`] in all, one per caller - others are
/// refused at once with RESOURCE_EXHAUSTED (`SCANS_BUSY`). So no caller
/// holds database connections or the database's cores with scans.
#[derive(Debug, Clone)]
pub struct ScanBound {
    indexed: &'static [&'static str],
    timeout: std::time::Duration,
    running: std::sync::Arc<tokio::sync::Semaphore>,
    callers: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Searches that scan running at once in one service process.
pub const SCANS_AT_ONCE: usize = 2;

/// A caller's one scan in flight; ends it on drop.
struct ScanSlot {
    callers: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    caller: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ScanSlot {
    fn drop(&mut self) {
        self.callers.lock().expect("scan callers lock").remove(&self.caller);
    }
}

impl ScanBound {
    /// Scans of searches whose filter narrows none of `indexed` (SQL
    /// expressions with an index) are bounded to `timeout` each.
    pub fn new(indexed: &'static [&'static str], timeout: std::time::Duration) -> Self {
        Self {
            indexed,
            timeout,
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(SCANS_AT_ONCE)),
            callers: Default::default(),
        }
    }

    /// The statement timeout a query with `filter` must run under, if it
    /// needs a shorter one than the service's.
    pub fn timeout_for(&self, filter: Option<&Where>) -> Option<std::time::Duration> {
        filter.filter(|f| !f.can_use_index(self.indexed)).map(|_| self.timeout)
    }

    fn slot(&self, caller: String) -> Option<ScanSlot> {
        let permit = self.running.clone().try_acquire_owned().ok()?;
        if !self.callers.lock().expect("scan callers lock").insert(caller.clone()) {
            return None;
        }
        Some(ScanSlot { callers: self.callers.clone(), caller, _permit: permit })
    }

    /// Runs `query` on `pool` as `caller`; if `filter` makes it a scan,
    /// under the shorter timeout (in a transaction of its own, `set local`)
    /// and only with a free scan slot. A statement timeout there is
    /// [`clinic_pg::api_error::ApiError::FilterTooCostly`].
    pub async fn fetch_all(
        &self,
        pool: &sqlx::PgPool,
        filter: Option<&Where>,
        caller: String,
        mut query: QueryBuilder<Postgres>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, clinic_pg::api_error::ApiError> {
        let Some(timeout) = self.timeout_for(filter) else {
            return Ok(query.build().fetch_all(pool).await?);
        };
        let _slot = self.slot(caller).ok_or(clinic_pg::api_error::ApiError::ScansBusy)?;
        let mut tx = pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("set local statement_timeout = {}", timeout.as_millis())))
            .execute(&mut *tx)
            .await?;
        match query.build().fetch_all(&mut *tx).await {
            Ok(rows) => {
                tx.commit().await?;
                Ok(rows)
            }
            Err(e) if clinic_pg::db::is_statement_timeout(&e) => {
                Err(clinic_pg::api_error::ApiError::FilterTooCostly { timeout_ms: timeout.as_millis() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn rank_sql(sql: &str, values: &[&str]) -> String {
    let list: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    format!("array_position(array[{}]::text[], {sql})", list.join(", "))
}

fn violation(description: impl std::fmt::Display, at: usize) -> FieldViolation {
    FieldViolation::new("filter", format!("{description} at {at}"))
}

fn check_cmp(c: &filter::Comparison, fields: &[Field]) -> Result<Where, FieldViolation> {
    let Some(field) = fields.iter().find(|f| f.name == c.field) else {
        let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
        return Err(violation(
            format!("unknown field `{}` (fields: {})", c.field, known.join(", ")),
            c.field_at,
        ));
    };
    let cmp = |lhs: String, value: Value| Ok(Where::Cmp { lhs, op: c.op.sql(), value });
    let text = || match &c.value {
        Literal::Text(s) => Ok(s.as_str()),
        _ => Err(violation(format!("expected a double-quoted string for `{}`", field.name), c.value_at)),
    };
    match field.kind {
        Kind::Folded => {
            let value = text()?;
            match value.strip_suffix('*') {
                Some(prefix) => {
                    if !matches!(c.op, Op::Eq | Op::Ne) {
                        return Err(violation("a prefix (`*`) needs `=` or `!=`", c.value_at));
                    }
                    let escaped: String = fold(prefix)
                        .chars()
                        .flat_map(|ch| if matches!(ch, '%' | '_' | '\\') { vec!['\\', ch] } else { vec![ch] })
                        .collect();
                    Ok(Where::Prefix {
                        lhs: field.sql.to_owned(),
                        pattern: format!("{escaped}%"),
                        negated: c.op == Op::Ne,
                    })
                }
                None => cmp(field.sql.to_owned(), Value::Text(fold(value))),
            }
        }
        Kind::Date => {
            let date = NaiveDate::parse_from_str(text()?, "%Y-%m-%d")
                .map_err(|_| violation("expected a date (\"YYYY-MM-DD\")", c.value_at))?;
            cmp(field.sql.to_owned(), Value::Date(date))
        }
        Kind::Timestamp => {
            let raw = text()?;
            let time = DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                        .map(|d| d.and_time(Default::default()).and_utc())
                })
                .map_err(|_| violation("expected a time (\"2026-11-01T09:30:00Z\") or a date", c.value_at))?;
            cmp(field.sql.to_owned(), Value::Time(time))
        }
        Kind::Integer => match c.value {
            Literal::Number(n) => cmp(field.sql.to_owned(), Value::Int(n)),
            _ => Err(violation(format!("expected a whole number for `{}`", field.name), c.value_at)),
        },
        Kind::Token => {
            let token = text()?;
            if !matches!(c.op, Op::Eq | Op::Ne) {
                return Err(violation(format!("`{}` takes only `=` or `!=`", field.name), c.value_at));
            }
            Ok(Where::Contains {
                lhs: field.sql.to_owned(),
                token: token.to_owned(),
                negated: c.op == Op::Ne,
            })
        }
        Kind::Enum { prefix, values } => {
            let raw = match &c.value {
                Literal::Word(w) | Literal::Text(w) => w.to_ascii_uppercase(),
                Literal::Number(_) => String::new(),
            };
            let name = raw.strip_prefix(prefix).unwrap_or(&raw);
            let Some(position) = values.iter().position(|v| *v == name) else {
                return Err(violation(
                    format!("`{}` takes one of {} (with or without {prefix})", field.name, values.join(", ")),
                    c.value_at,
                ));
            };
            match c.op {
                Op::Eq | Op::Ne => cmp(field.sql.to_owned(), Value::Text(values[position].to_owned())),
                _ => cmp(rank_sql(field.sql, values), Value::Int(position as i64 + 1)),
            }
        }
    }
}

fn check_expr(expr: &Expr, fields: &[Field]) -> Result<Where, FieldViolation> {
    Ok(match expr {
        Expr::Cmp(c) => check_cmp(c, fields)?,
        Expr::And(parts) => {
            Where::And(parts.iter().map(|e| check_expr(e, fields)).collect::<Result<_, _>>()?)
        }
        Expr::Or(parts) => Where::Or(parts.iter().map(|e| check_expr(e, fields)).collect::<Result<_, _>>()?),
        Expr::Not(inner) => Where::Not(Box::new(check_expr(inner, fields)?)),
    })
}

/// Parses and checks the filter `text` against `fields`; `None` when empty.
pub fn check_filter(text: &str, fields: &[Field]) -> Result<Option<Where>, FieldViolation> {
    filter::parse(text)?.map(|expr| check_expr(&expr, fields)).transpose()
}

impl Where {
    /// Writes the condition into `qb`, every value a bound parameter.
    pub fn push(&self, qb: &mut QueryBuilder<Postgres>) {
        let list = |qb: &mut QueryBuilder<Postgres>, parts: &[Where], joiner: &str| {
            qb.push("(");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    qb.push(joiner);
                }
                part.push(qb);
            }
            qb.push(")");
        };
        match self {
            Where::Cmp { lhs, op, value } => {
                qb.push("(").push(lhs).push(" ").push(*op).push(" ");
                value.push_bind(qb);
                qb.push(")");
            }
            Where::Prefix { lhs, pattern, negated } => {
                qb.push("(").push(lhs).push(if *negated { " not like " } else { " like " });
                qb.push_bind(pattern.clone());
                qb.push(" escape '\\')");
            }
            Where::Contains { lhs, token, negated } => {
                qb.push(if *negated { "(not " } else { "(" }).push(lhs).push(" @> array[");
                qb.push_bind(token.clone());
                qb.push("]::text[])");
            }
            Where::And(parts) => list(qb, parts, " and "),
            Where::Or(parts) => list(qb, parts, " or "),
            Where::Not(inner) => {
                qb.push("(not ");
                inner.push(qb);
                qb.push(")");
            }
        }
    }
}

/// The type of a sort key's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    /// Text (a folded key).
    Text,
    /// A whole number (an id, a rank).
    Int,
    /// A date.
    Date,
    /// A point in time.
    Time,
}

/// A field results may be ordered by.
#[derive(Debug, Clone, Copy)]
pub struct SortField {
    /// Its name in `order_by`.
    pub name: &'static str,
    /// The SQL expression rows are sorted by (an indexed column or key).
    pub sql: &'static str,
    /// The type of its values.
    pub kind: SortKind,
}

/// One key of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The field's name.
    pub name: &'static str,
    /// Its SQL expression.
    pub sql: &'static str,
    /// The type of its values.
    pub kind: SortKind,
    /// Descending.
    pub desc: bool,
}

/// A checked `order_by`: its keys, always ending with `id` (the tie
/// breaker that makes every position unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The keys, most significant first.
    pub keys: Vec<SortKey>,
}

/// Parses an AIP-132 `order_by` ("last_name, birth_date desc") against
/// `fields`, which must include `id`; empty means by id.
pub fn check_order(text: &str, fields: &[SortField]) -> Result<Order, FieldViolation> {
    let bad = |what: String| FieldViolation::new("order_by", what);
    if text.chars().count() > 200 {
        return Err(bad("must be at most 200 characters".into()));
    }
    let id = fields.iter().find(|f| f.name == "id").expect("every order can fall back to id");
    let mut keys: Vec<SortKey> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = part.split_whitespace().collect();
        let desc = match words.as_slice() {
            [_] => false,
            [_, direction] if direction.eq_ignore_ascii_case("desc") => true,
            [_, direction] if direction.eq_ignore_ascii_case("asc") => false,
            _ => return Err(bad(format!("`{part}` is not a field optionally followed by `desc`"))),
        };
        let Some(field) = fields.iter().find(|f| f.name == words[0]) else {
            let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(bad(format!("cannot order by `{}` (fields: {})", words[0], known.join(", "))));
        };
        if keys.iter().any(|k| k.name == field.name) {
            return Err(bad(format!("`{}` is named twice", field.name)));
        }
        keys.push(SortKey { name: field.name, sql: field.sql, kind: field.kind, desc });
        if field.name == "id" {
            break;
        }
    }
    if keys.last().is_none_or(|k| k.name != "id") {
        keys.push(SortKey { name: id.name, sql: id.sql, kind: id.kind, desc: false });
    }
    Ok(Order { keys })
}

impl Order {
    /// The order by id alone.
    pub fn is_by_id(&self) -> bool {
        self.keys.len() == 1
    }

    /// A canonical spelling, for page-token scopes.
    pub fn canonical(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| if k.desc { format!("{} desc", k.name) } else { k.name.to_owned() })
            .collect();
        keys.join(",")
    }

    /// Writes the sort keys as extra columns (`, <key> as sort_0, …`), so
    /// each row can say where it stands ([`Self::cursor`]).
    pub fn push_select(&self, qb: &mut QueryBuilder<Postgres>) {
        for (i, key) in self.keys.iter().enumerate() {
            qb.push(", ").push(key.sql).push(format!(" as sort_{i}"));
        }
    }

    /// Where `row` (selected with [`Self::push_select`]) stands in this order.
    pub fn cursor(&self, row: &sqlx::postgres::PgRow) -> Result<Cursor, sqlx::Error> {
        use sqlx::Row;
        self.keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let column = format!("sort_{i}");
                Ok(match key.kind {
                    SortKind::Text => Value::Text(row.try_get(column.as_str())?),
                    SortKind::Int => Value::Int(
                        row.try_get::<i32, _>(column.as_str())
                            .map(i64::from)
                            .or_else(|_| row.try_get(column.as_str()))?,
                    ),
                    SortKind::Date => Value::Date(row.try_get(column.as_str())?),
                    SortKind::Time => Value::Time(row.try_get(column.as_str())?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map(Cursor)
    }

    /// Writes ` order by …`.
    pub fn push_order_by(&self, qb: &mut QueryBuilder<Postgres>) {
        qb.push(" order by ");
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(key.sql).push(if key.desc { " desc" } else { " asc" });
        }
    }

    /// Writes ` order by …` over the sort keys' selected columns (`sort_0`,
    /// … of [`Self::push_select`]), for a query that wraps the one that
    /// selected them.
    pub fn push_order_by_selected(&self, qb: &mut QueryBuilder<Postgres>) {
        qb.push(" order by ");
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push(format!("sort_{i}")).push(if key.desc { " desc" } else { " asc" });
        }
    }

    /// Writes the condition "strictly after `cursor`" in this order: a row
    /// comparison when every key goes the same way (which an index on the
    /// keys serves directly), else its expansion.
    pub fn push_after(&self, qb: &mut QueryBuilder<Postgres>, cursor: &Cursor) {
        let values = &cursor.0;
        if self.keys.iter().all(|k| k.desc == self.keys[0].desc) {
            qb.push("(");
            for (i, key) in self.keys.iter().enumerate() {
                qb.push(if i > 0 { ", " } else { "" }).push(key.sql);
            }
            qb.push(if self.keys[0].desc { ") < (" } else { ") > (" });
            for (i, value) in values.iter().enumerate() {
                qb.push(if i > 0 { ", " } else { "" });
                value.push_bind(qb);
            }
            qb.push(")");
            return;
        }
        qb.push("(");
        for (i, key) in self.keys.iter().enumerate() {
            qb.push(if i > 0 { " or (" } else { "(" });
            for (earlier, value) in self.keys[..i].iter().zip(values) {
                qb.push(earlier.sql).push(" = ");
                value.push_bind(qb);
                qb.push(" and ");
            }
            qb.push(key.sql).push(if key.desc { " < " } else { " > " });
            values[i].push_bind(qb);
            qb.push(")");
        }
        qb.push(")");
    }
}

/// Where a page ended: the sort values of its last row, one per key of the
/// order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor(pub Vec<Value>);

/// A listing's order and the scope its page tokens are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The order.
    pub order: Order,
    /// The page-token scope: the method, with the filter and order when not
    /// the plain walk by id (whose tokens stay what they always were).
    pub scope: String,
}

impl Walk {
    /// The walk of `method` under `filter` (as sent) and `order`.
    pub fn new(method: &str, filter: &str, order: Order) -> Self {
        let filter = filter.trim();
        let scope = if filter.is_empty() && order.is_by_id() {
            method.to_owned()
        } else {
            format!("{method}?filter={filter}&order_by={}", order.canonical())
        };
        Self { order, scope }
    }
}

/// Keyset cursors carried in page tokens (bound to the walk they belong to).
pub trait CursorTokens {
    /// The token that continues after `cursor` in `scope`.
    fn encode_cursor(&self, scope: &str, cursor: &Cursor) -> String;

    /// The cursor of `token`, checked against `scope` and `order` (one value
    /// per key); `None` for the first page.
    fn decode_cursor(
        &self,
        scope: &str,
        token: &str,
        order: &Order,
    ) -> Result<Option<Cursor>, InvalidPageToken>;

    /// Where `token` continues `walk`: by id, the token is the id's (the
    /// format every earlier token has); otherwise the cursor's.
    fn decode_walk(&self, walk: &Walk, token: &str) -> Result<Option<Cursor>, InvalidPageToken>;

    /// The token after the last item of `page` (each item with its cursor)
    /// when more follow; empty otherwise.
    fn next_walk_token<T>(&self, walk: &Walk, page: &clinic_core::paging::Page<(T, Cursor)>) -> String;
}

impl CursorTokens for PageTokens {
    fn encode_cursor(&self, scope: &str, cursor: &Cursor) -> String {
        self.encode_bytes(scope, &serde_json::to_vec(cursor).expect("a cursor serialises"))
    }

    fn decode_cursor(
        &self,
        scope: &str,
        token: &str,
        order: &Order,
    ) -> Result<Option<Cursor>, InvalidPageToken> {
        let Some(bytes) = self.decode_bytes(scope, token)? else { return Ok(None) };
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| InvalidPageToken)?;
        if cursor.0.len() != order.keys.len() {
            return Err(InvalidPageToken);
        }
        Ok(Some(cursor))
    }

    fn decode_walk(&self, walk: &Walk, token: &str) -> Result<Option<Cursor>, InvalidPageToken> {
        if walk.order.is_by_id() {
            Ok(self.decode(&walk.scope, token)?.map(|id| Cursor(vec![Value::Int(id)])))
        } else {
            self.decode_cursor(&walk.scope, token, &walk.order)
        }
    }

    fn next_walk_token<T>(&self, walk: &Walk, page: &clinic_core::paging::Page<(T, Cursor)>) -> String {
        match page.items.last() {
            Some((_, cursor)) if page.more => match (walk.order.is_by_id(), cursor.0.as_slice()) {
                (true, [Value::Int(id)]) => self.encode(&walk.scope, *id),
                _ => self.encode_cursor(&walk.scope, cursor),
            },
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field { name: "last_name", sql: "last_name_key", kind: Kind::Folded },
        Field { name: "birth_date", sql: "birth_date", kind: Kind::Date },
        Field { name: "create_time", sql: "create_time", kind: Kind::Timestamp },
        Field { name: "patient_id", sql: "patient_id", kind: Kind::Integer },
        Field {
            name: "urgency_level",
            sql: "urgency_level",
            kind: Kind::Enum { prefix: "URGENCY_LEVEL_", values: &["LOW", "MID", "HIGH"] },
        },
    ];
    const SORT: &[SortField] = &[
        SortField { name: "last_name", sql: "last_name_key", kind: SortKind::Text },
        SortField { name: "birth_date", sql: "birth_date", kind: SortKind::Date },
        SortField { name: "id", sql: "id", kind: SortKind::Int },
    ];

    fn sql(filter: &str) -> String {
        let mut qb = QueryBuilder::new("");
        check_filter(filter, FIELDS).unwrap().unwrap().push(&mut qb);
        qb.into_sql().as_str().to_owned()
    }

    fn error(filter: &str) -> String {
        check_filter(filter, FIELDS).unwrap_err().description
    }

    #[test]
    fn values_are_bound_never_spliced() {
        assert_eq!(sql(r#"last_name = "O'Brien""#), "(last_name_key = $1)");
        assert_eq!(
            sql(r#"last_name = "trev*" AND birth_date >= "1990-01-01""#),
            "((last_name_key like $1 escape '\\') and (birth_date >= $2))"
        );
        assert_eq!(
            sql("NOT patient_id = 3 OR patient_id = 4"),
            "((not (patient_id = $1)) or (patient_id = $2))"
        );
        assert_eq!(sql("urgency_level = HIGH"), "(urgency_level = $1)");
        assert_eq!(
            sql("urgency_level >= URGENCY_LEVEL_MID"),
            "(array_position(array['LOW', 'MID', 'HIGH']::text[], urgency_level) >= $1)"
        );
    }

    #[test]
    fn values_are_folded_typed_and_escaped() {
        let Some(Where::Prefix { pattern, .. }) = check_filter(r#"last_name = "TREVIÑ_%*""#, FIELDS).unwrap()
        else {
            panic!()
        };
        assert_eq!(pattern, "trevin\\_\\%%");
        let Some(Where::Cmp { value, .. }) = check_filter(r#"create_time > "2026-11-01""#, FIELDS).unwrap()
        else {
            panic!()
        };
        assert_eq!(value, Value::Time("2026-11-01T00:00:00Z".parse().unwrap()));
        let Some(Where::Cmp { value, .. }) = check_filter(r#"urgency_level = "high""#, FIELDS).unwrap()
        else {
            panic!()
        };
        assert_eq!(value, Value::Text("HIGH".into()));
    }

    #[test]
    fn type_errors_say_where() {
        assert_eq!(
            error(r#"lastname = "x""#),
            "unknown field `lastname` (fields: last_name, birth_date, create_time, patient_id, urgency_level) at 1"
        );
        assert_eq!(error(r#"birth_date = "1990-13-01""#), "expected a date (\"YYYY-MM-DD\") at 14");
        assert_eq!(error("last_name = smith"), "expected a double-quoted string for `last_name` at 13");
        assert_eq!(error(r#"patient_id = "3""#), "expected a whole number for `patient_id` at 14");
        assert_eq!(
            error("urgency_level = URGENT"),
            "`urgency_level` takes one of LOW, MID, HIGH (with or without URGENCY_LEVEL_) at 17"
        );
        assert_eq!(error(r#"last_name < "a*""#), "a prefix (`*`) needs `=` or `!=` at 13");
        assert_eq!(
            error(r#"create_time > "yesterday""#),
            "expected a time (\"2026-11-01T09:30:00Z\") or a date at 15"
        );
    }

    #[test]
    fn orders_end_with_id_and_reject_unknown_fields() {
        let order = check_order("last_name, birth_date desc", SORT).unwrap();
        assert_eq!(order.canonical(), "last_name,birth_date desc,id");
        assert_eq!(check_order("", SORT).unwrap().canonical(), "id");
        assert_eq!(check_order("id desc", SORT).unwrap().canonical(), "id desc");
        assert!(check_order("email", SORT).unwrap_err().description.contains("cannot order by `email`"));
        assert!(check_order("last_name up", SORT).is_err());
        assert!(check_order("last_name, last_name", SORT).is_err());
    }

    #[test]
    fn after_a_cursor_is_a_row_comparison_or_its_expansion() {
        let cursor =
            Cursor(vec![Value::Text("b".into()), Value::Date("1990-01-01".parse().unwrap()), Value::Int(7)]);
        let mut qb = QueryBuilder::new("");
        check_order("last_name, birth_date", SORT).unwrap().push_after(&mut qb, &cursor);
        assert_eq!(qb.into_sql().as_str(), "(last_name_key, birth_date, id) > ($1, $2, $3)");
        let mut qb = QueryBuilder::new("");
        check_order("last_name, birth_date desc", SORT).unwrap().push_after(&mut qb, &cursor);
        assert_eq!(
            qb.into_sql().as_str(),
            "((last_name_key > $1) or (last_name_key = $2 and birth_date < $3) or (last_name_key = $4 and birth_date = $5 and id > $6))"
        );
    }

    #[test]
    fn cursors_round_trip_only_in_their_scope_and_shape() {
        let tokens = PageTokens::new(b"k".to_vec());
        let order = check_order("last_name", SORT).unwrap();
        let cursor = Cursor(vec![Value::Text("trevino".into()), Value::Int(9)]);
        let token = tokens.encode_cursor("scope", &cursor);
        assert_eq!(tokens.decode_cursor("scope", &token, &order), Ok(Some(cursor)));
        assert!(tokens.decode_cursor("other", &token, &order).is_err());
        let by_id = check_order("", SORT).unwrap();
        assert!(tokens.decode_cursor("scope", &token, &by_id).is_err());
        let walk = Walk::new("List", "", by_id);
        assert_eq!(walk.scope, "List", "the plain walk keeps its earlier tokens");
        let old = tokens.encode("List", 41);
        assert_eq!(tokens.decode_walk(&walk, &old), Ok(Some(Cursor(vec![Value::Int(41)]))));
        let filtered = Walk::new("List", " a = 1 ", check_order("", SORT).unwrap());
        assert_eq!(filtered.scope, "List?filter=a = 1&order_by=id");
        assert!(tokens.decode_walk(&filtered, &old).is_err(), "a token is bound to its filter");
    }

    /// The cost rule: a filter is narrowed by an index when a conjunction
    /// holds a positive comparison or prefix on an indexed field, in every
    /// branch of a disjunction; `!=` and NOT never narrow.
    #[test]
    fn a_filter_uses_an_index_only_through_a_positive_condition_on_an_indexed_field() {
        let indexed = &["last_name_key", "birth_date", "patient_id"];
        let uses = |text: &str| check_filter(text, FIELDS).unwrap().unwrap().can_use_index(indexed);
        assert!(uses(r#"last_name = "gar*""#));
        assert!(uses(r#"birth_date < "1950-01-01""#));
        assert!(uses(r#"last_name = "a*" AND urgency_level = HIGH"#));
        assert!(uses(r#"last_name = "a*" OR birth_date > "2000-01-01""#));
        assert!(!uses(r#"last_name != "a*""#));
        assert!(!uses(r#"NOT last_name = "a*""#));
        assert!(!uses("urgency_level = HIGH"));
        assert!(!uses(r#"last_name = "a*" OR urgency_level = HIGH"#), "one branch scans");
        assert!(!uses(r#"birth_date != "1950-01-01""#));
    }
}
