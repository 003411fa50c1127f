//! The fallback when a string does not parse as a whole: split it into statements with the
//! tokenizer (which knows quotes, dollar quotes and comments), recognise the few Postgres
//! statements sqlparser cannot parse but that must be classified to be *denied* by name (`DO`,
//! `ALTER SYSTEM`), and parse the others one by one. Whatever still does not parse is refused.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, Tokenizer};

use super::collector::classify_statement;
use super::names::Resources;
use super::{actions, Database, StatementScope};
use crate::classify::{ClassifyError, Scope};

/// Classify `sql` statement by statement; `whole` is why the string did not parse as a whole.
pub(super) fn classify_pieces(sql: &str, db: &Database, whole: ParserError) -> Result<Vec<StatementScope>, ClassifyError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).with_unescape(false).tokenize().map_err(|_| unparseable(&whole))?;
    let mut scopes = Vec::new();
    for piece in tokens.split(|t| *t == Token::SemiColon) {
        let words: Vec<Keyword> = piece
            .iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .take(2)
            .map(|t| match t {
                Token::Word(word) => word.keyword,
                _ => Keyword::NoKeyword,
            })
            .collect();
        let raw = match words.as_slice() {
            [] => continue,
            [Keyword::DO, ..] => Some(("DO", actions::DO)),
            [Keyword::ALTER, Keyword::SYSTEM] => Some(("ALTER SYSTEM", actions::ALTER_SYSTEM)),
            _ => None,
        };
        if let Some((verb, action)) = raw {
            scopes.push(StatementScope { sql_verb: verb.to_string(), scope: Scope::single("postgres", None, action, Resources::new(db).database()) });
            continue;
        }
        let text: String = piece.iter().map(Token::to_string).collect();
        let statements = Parser::parse_sql(&dialect, &text).map_err(|e| unparseable(&e))?;
        for statement in &statements {
            scopes.push(classify_statement(statement, db)?);
        }
    }
    Ok(scopes)
}

fn unparseable(err: &ParserError) -> ClassifyError {
    ClassifyError::new(format!("unparseable SQL: {err}"))
}
