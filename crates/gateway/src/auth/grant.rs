//! Document grants: a glob of the `docs` claim and the access it gives.
//!
//! Globs are compiled to anchored regexes (linear-time matching), once per
//! distinct glob: a verifier keeps a bounded cache, because every token
//! check parses the token's grants again.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind as JwtErrorKind};
use parking_lot::Mutex;
use regex::Regex;

/// Globs longer than this make the token invalid. A real grant names a
/// document or a folder of them; document names are at most 1024 bytes, so
/// a longer glob can only be a mistake or an attempt to make us compile
/// something large.
pub(crate) const MAX_GLOB_BYTES: usize = 2048;

/// Read or read-write. Ordered by breadth (`Read < ReadWrite`), so the
/// widest of several grants is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// May sync and see others' awareness, may not change the document.
    Read,
    /// May change the document.
    ReadWrite,
}

/// Distinct globs a verifier keeps compiled. Issuers grant a handful of
/// folder globs to many users, so the working set is small; when it is
/// full (a hostile or very varied issuer) the cache starts over.
const MAX_CACHED_GLOBS: usize = 4096;

/// Compiled globs by their text.
#[derive(Default)]
pub(crate) struct GlobCache {
    compiled: Mutex<HashMap<String, Regex>>,
}

impl fmt::Debug for GlobCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobCache")
            .field("globs", &self.len())
            .finish()
    }
}

impl GlobCache {
    /// How many globs are compiled.
    pub(crate) fn len(&self) -> usize {
        self.compiled.lock().len()
    }

    /// The regex of `glob`, compiled on first use. The lock is not held
    /// while compiling.
    fn matcher(&self, glob: &str) -> Result<Regex, JwtError> {
        if let Some(matcher) = self.compiled.lock().get(glob) {
            return Ok(matcher.clone());
        }
        let matcher = compile(glob)?;
        let mut compiled = self.compiled.lock();
        if compiled.len() >= MAX_CACHED_GLOBS {
            compiled.clear();
        }
        compiled.insert(glob.to_owned(), matcher.clone());
        Ok(matcher)
    }
}

pub(crate) fn invalid_docs(reason: String) -> JwtError {
    JwtErrorKind::InvalidClaimFormat(format!("docs: {reason}")).into()
}

/// Checks a glob's size and compiles it.
fn compile(glob: &str) -> Result<Regex, JwtError> {
    if glob.is_empty() {
        return Err(invalid_docs("empty glob".to_owned()));
    }
    if glob.len() > MAX_GLOB_BYTES {
        return Err(invalid_docs(format!(
            "glob longer than {MAX_GLOB_BYTES} bytes"
        )));
    }
    Regex::new(&glob_to_regex(glob))
        .map_err(|_| invalid_docs(format!("glob {glob:?} is too complex")))
}

/// One entry of the `docs` claim: a glob and the access it grants.
#[derive(Clone)]
pub struct DocGrant {
    glob: String,
    access: Access,
    matcher: Regex,
}

impl fmt::Debug for DocGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocGrant")
            .field("glob", &self.glob)
            .field("access", &self.access)
            .finish()
    }
}

impl DocGrant {
    /// Compiles `glob` (syntax in the `auth` module docs). Fails only for
    /// an empty glob or one longer than 2048 bytes.
    pub fn new(glob: &str, access: Access) -> Result<Self, JwtError> {
        Ok(Self {
            glob: glob.to_owned(),
            access,
            matcher: compile(glob)?,
        })
    }

    /// As [`DocGrant::new`], with the regex from `cache`.
    pub(crate) fn cached(glob: &str, access: Access, cache: &GlobCache) -> Result<Self, JwtError> {
        Ok(Self {
            glob: glob.to_owned(),
            access,
            matcher: cache.matcher(glob)?,
        })
    }

    /// The glob as written in the token.
    pub fn glob(&self) -> &str {
        &self.glob
    }

    /// The access it grants.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Whether the glob matches the whole of `doc`.
    pub fn matches(&self, doc: &str) -> bool {
        self.matcher.is_match(doc)
    }
}

/// An anchored regex with the glob semantics of the module docs. Literal
/// runs are escaped, so nothing but `*`, `**` and `?` is special; matching
/// is linear in the name whatever the glob (the regex crate does not
/// backtrack), so a hostile issuer cannot make matching slow.
fn glob_to_regex(glob: &str) -> String {
    let mut regex = String::with_capacity(glob.len() * 2 + 8);
    // `s`: `.` (used for `**`) matches newlines too; a name may hold any
    // character.
    regex.push_str("(?s)^");
    let mut chars = glob.chars().peekable();
    let mut literal = String::new();
    while let Some(c) = chars.next() {
        let wildcard = match c {
            '*' if chars.next_if_eq(&'*').is_some() => {
                // `***` and longer mean the same as `**`.
                while chars.next_if_eq(&'*').is_some() {}
                ".*"
            }
            '*' => "[^/]*",
            '?' => "[^/]",
            other => {
                literal.push(other);
                continue;
            }
        };
        regex.push_str(&regex::escape(&literal));
        literal.clear();
        regex.push_str(wildcard);
    }
    regex.push_str(&regex::escape(&literal));
    regex.push('$');
    regex
}
