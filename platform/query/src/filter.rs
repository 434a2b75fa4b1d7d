//! The filter language of every List rpc: a subset of AIP-160, parsed once
//! into a typed expression that each service checks against its own fields
//! (see [`crate::search`]).
//!
//! ```text
//! filter      = [ expression ]
//! expression  = factor { "AND" factor }
//! factor      = term { "OR" term }            (OR binds tighter than AND, as in AIP-160)
//! term        = [ "NOT" ] simple
//! simple      = comparison | "(" expression ")"
//! comparison  = FIELD ( "=" | "!=" | "<" | "<=" | ">" | ">=" ) VALUE
//! VALUE       = "double-quoted string" | number | bare word (an enum value)
//! ```
//!
//! Keywords are upper-case, as in AIP-160. Every error says what was found
//! where, by character position from 1 ("expected a value at 14"). Filters
//! are bounded: length, nesting and number of comparisons.

use winnow::{
    ascii::{digit1, multispace0},
    combinator::{alt, cut_err, opt, preceded, repeat, terminated},
    error::{ContextError, ErrMode},
    prelude::*,
    stream::LocatingSlice,
    token::{any, none_of, one_of, take_while},
};

use clinic_core::validation::FieldViolation;

/// Longest filter accepted, in characters.
pub const MAX_FILTER_CHARS: usize = 2000;
/// Deepest nesting of parentheses and NOT.
pub const MAX_DEPTH: usize = 16;
/// Most comparisons in one filter.
pub const MAX_COMPARISONS: usize = 50;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    /// The SQL operator.
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A literal as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// A double-quoted string, unescaped.
    Text(String),
    /// A whole number.
    Number(i64),
    /// A bare word: an enum value such as `HIGH`.
    Word(String),
}

/// `field op value`, with where each part starts (1-based characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The field name.
    pub field: String,
    /// Where the field name starts.
    pub field_at: usize,
    /// The operator.
    pub op: Op,
    /// The value.
    pub value: Literal,
    /// Where the value starts.
    pub value_at: usize,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// One comparison.
    Cmp(Comparison),
    /// Every one holds.
    And(Vec<Expr>),
    /// At least one holds.
    Or(Vec<Expr>),
    /// It does not hold.
    Not(Box<Expr>),
}

/// A lexical token with its start (1-based character position).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Op(Op),
    Text(String),
    Number(i64),
    Word(String),
    Unsupported(char),
}

type Input<'a> = LocatingSlice<&'a str>;

fn string(input: &mut Input<'_>) -> ModalResult<String> {
    let body = repeat(0.., alt((preceded('\\', any), none_of(['"', '\\'])))).fold(String::new, |mut s, c| {
        s.push(c);
        s
    });
    // Once a string has begun it must end: no falling back to other tokens.
    preceded('"', cut_err(terminated(body, '"'))).parse_next(input)
}

fn word(input: &mut Input<'_>) -> ModalResult<String> {
    (
        one_of(|c: char| c.is_alphabetic() || c == '_'),
        take_while(0.., |c: char| c.is_alphanumeric() || "_.*-".contains(c)),
    )
        .take()
        .map(str::to_owned)
        .parse_next(input)
}

fn number(input: &mut Input<'_>) -> ModalResult<i64> {
    (opt('-'), digit1).take().try_map(str::parse::<i64>).parse_next(input)
}

fn operator(input: &mut Input<'_>) -> ModalResult<Op> {
    alt((
        "!=".value(Op::Ne),
        "<=".value(Op::Le),
        ">=".value(Op::Ge),
        "=".value(Op::Eq),
        "<".value(Op::Lt),
        ">".value(Op::Gt),
    ))
    .parse_next(input)
}

fn token(input: &mut Input<'_>) -> ModalResult<Token> {
    alt((
        '('.value(Token::Open),
        ')'.value(Token::Close),
        operator.map(Token::Op),
        string.map(Token::Text),
        number.map(Token::Number),
        word.map(Token::Word),
        any.map(Token::Unsupported),
    ))
    .parse_next(input)
}

/// The tokens of `text`, each with its 1-based character position, or the
/// position of an unterminated string.
fn tokens(text: &str) -> Result<Vec<(Token, usize)>, usize> {
    let position = |byte: usize| text[..byte].chars().count() + 1;
    let mut input = LocatingSlice::new(text);
    let mut out = Vec::new();
    loop {
        let _ = multispace0::<_, ContextError>.parse_next(&mut input);
        if input.is_empty() {
            return Ok(out);
        }
        let start = text.len() - input.len();
        match token.with_span().parse_next(&mut input) {
            Ok((token, span)) => out.push((token, position(span.start))),
            Err(ErrMode::Backtrack(_) | ErrMode::Cut(_) | ErrMode::Incomplete(_)) => {
                return Err(position(start));
            }
        }
    }
}

struct Grammar {
    tokens: Vec<(Token, usize)>,
    next: usize,
    end: usize,
    comparisons: usize,
}

/// A filter that cannot be parsed: what and where.
fn at(description: impl std::fmt::Display, position: usize) -> FieldViolation {
    FieldViolation::new("filter", format!("{description} at {position}"))
}

impl Grammar {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(t, _)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(_, p)| *p)
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == keyword) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expression(&mut self, depth: usize) -> Result<Expr, FieldViolation> {
        let mut factors = vec![self.factor(depth)?];
        while self.keyword("AND") {
            factors.push(self.factor(depth)?);
        }
        Ok(if factors.len() == 1 { factors.remove(0) } else { Expr::And(factors) })
    }

    fn factor(&mut self, depth: usize) -> Result<Expr, FieldViolation> {
        let mut terms = vec![self.term(depth)?];
        while self.keyword("OR") {
            terms.push(self.term(depth)?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Expr::Or(terms) })
    }

    fn term(&mut self, depth: usize) -> Result<Expr, FieldViolation> {
        if depth >= MAX_DEPTH {
            return Err(at(format!("nested deeper than {MAX_DEPTH} levels"), self.position()));
        }
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.term(depth + 1)?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.next += 1;
            let inner = self.expression(depth + 1)?;
            if self.peek() != Some(&Token::Close) {
                return Err(at("expected `)`", self.position()));
            }
            self.next += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FieldViolation> {
        let field_at = self.position();
        let field = match self.peek() {
            Some(Token::Word(w)) if !matches!(w.as_str(), "AND" | "OR" | "NOT") => w.clone(),
            Some(Token::Unsupported(c)) => return Err(at(format!("unexpected `{c}`"), field_at)),
            Some(_) | None => return Err(at("expected a field name", field_at)),
        };
        self.next += 1;
        let op = match self.peek() {
            Some(Token::Op(op)) => *op,
            Some(Token::Unsupported(':')) => {
                return Err(at("the has operator `:` is not supported; use `=`", self.position()));
            }
            _ => return Err(at("expected an operator (=, !=, <, <=, >, >=)", self.position())),
        };
        self.next += 1;
        let value_at = self.position();
        let value = match self.peek() {
            Some(Token::Text(s)) => Literal::Text(s.clone()),
            Some(Token::Number(n)) => Literal::Number(*n),
            Some(Token::Word(w)) if !matches!(w.as_str(), "AND" | "OR" | "NOT") => Literal::Word(w.clone()),
            _ => return Err(at("expected a value", value_at)),
        };
        self.next += 1;
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            return Err(at(format!("more than {MAX_COMPARISONS} comparisons"), field_at));
        }
        Ok(Expr::Cmp(Comparison { field, field_at, op, value, value_at }))
    }
}

/// Parses `text`; `None` for an empty (or all-space) filter.
pub fn parse(text: &str) -> Result<Option<Expr>, FieldViolation> {
    let chars = text.chars().count();
    if chars > MAX_FILTER_CHARS {
        return Err(FieldViolation::new("filter", format!("must be at most {MAX_FILTER_CHARS} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldViolation::new("filter", "must not contain control characters"));
    }
    let tokens = tokens(text).map_err(|position| at("unterminated string", position))?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Grammar { tokens, next: 0, end: chars + 1, comparisons: 0 };
    let expr = parser.expression(0)?;
    match parser.peek() {
        None => Ok(Some(expr)),
        Some(Token::Close) => Err(at("unbalanced `)`", parser.position())),
        Some(_) => Err(at("expected AND, OR or the end", parser.position())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, field_at: usize, op: Op, value: Literal, value_at: usize) -> Expr {
        Expr::Cmp(Comparison { field: field.into(), field_at, op, value, value_at })
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().description
    }

    #[test]
    fn comparisons_of_every_operator_and_literal() {
        assert_eq!(
            parse(r#"last_name = "trev*""#).unwrap(),
            Some(cmp("last_name", 1, Op::Eq, Literal::Text("trev*".into()), 13))
        );
        for (text, op) in
            [("a!=1", Op::Ne), ("a<1", Op::Lt), ("a<=1", Op::Le), ("a>1", Op::Gt), ("a>=1", Op::Ge)]
        {
            let Some(Expr::Cmp(c)) = parse(text).unwrap() else { panic!("{text}") };
            assert_eq!((c.op, c.value), (op, Literal::Number(1)), "{text}");
        }
        let Some(Expr::Cmp(c)) = parse("urgency_level = URGENCY_LEVEL_HIGH").unwrap() else { panic!() };
        assert_eq!(c.value, Literal::Word("URGENCY_LEVEL_HIGH".into()));
        let Some(Expr::Cmp(c)) = parse(r#"email = "a\"b\\c""#).unwrap() else { panic!() };
        assert_eq!(c.value, Literal::Text(r#"a"b\c"#.into()));
        assert_eq!(parse("   ").unwrap(), None);
    }

    #[test]
    fn or_binds_tighter_than_and_and_not_tightest() {
        let parsed = parse("a = 1 AND b = 2 OR c = 3").unwrap().unwrap();
        let Expr::And(parts) = parsed else { panic!("{parsed:?}") };
        assert!(matches!(&parts[0], Expr::Cmp(c) if c.field == "a"));
        assert!(matches!(&parts[1], Expr::Or(o) if o.len() == 2));
        let parsed = parse("NOT a = 1 OR b = 2").unwrap().unwrap();
        let Expr::Or(terms) = parsed else { panic!("{parsed:?}") };
        assert!(matches!(&terms[0], Expr::Not(_)));
        let parsed = parse("(a = 1 AND b = 2) OR c = 3").unwrap().unwrap();
        assert!(matches!(parsed, Expr::Or(ref t) if matches!(&t[0], Expr::And(_))));
    }

    #[test]
    fn errors_say_what_and_where() {
        assert_eq!(error(r#"last_name = "x"#), "unterminated string at 13");
        assert_eq!(error("last_name"), "expected an operator (=, !=, <, <=, >, >=) at 10");
        assert_eq!(error("last_name ="), "expected a value at 12");
        assert_eq!(error("a = 1 b = 2"), "expected AND, OR or the end at 7");
        assert_eq!(error("(a = 1"), "expected `)` at 7");
        assert_eq!(error("a = 1)"), "unbalanced `)` at 6");
        assert_eq!(error("a : 1"), "the has operator `:` is not supported; use `=` at 3");
        assert_eq!(error("= 1"), "expected a field name at 1");
        assert_eq!(error("a = 1 AND"), "expected a field name at 10");
        assert_eq!(error("ñame = 1 AND § = 2"), "unexpected `§` at 14");
        assert_eq!(error("a = 99999999999999999999"), "expected a value at 5");
    }

    #[test]
    fn hostile_filters_are_bounded() {
        assert!(error(&"(".repeat(40)).contains("nested deeper than 16"));
        assert!(error(&"NOT ".repeat(40)).contains("nested deeper than 16"));
        let many = vec!["a = 1"; 51].join(" AND ");
        assert!(error(&many).contains("more than 50 comparisons"));
        assert!(error(&"x".repeat(2001)).contains("at most 2000"));
        assert!(error("a = \"\u{0}\"").contains("control"));
    }
}
