//! Redaction of task output before it leaves the agent: exact secret values (the
//! vault's) and credential-shaped text are replaced with [`MARKER`].
//!
//! What is redacted:
//! - every occurrence of each exact value of at least [`MIN_SECRET_LEN`] bytes.
//!   Overlapping and adjacent occurrences are merged, so each maximal run of
//!   secret bytes becomes one marker and no fragment of a secret survives next to
//!   another. Shorter values are ignored on purpose: redacting `1`, `on` or `abc`
//!   everywhere would mangle ordinary output, and a vault value that short is not
//!   a credential worth the damage (the vault warns about such entries).
//! - credential headers, matched case-insensitively anywhere in a line:
//!   `Authorization` (so also `Proxy-Authorization`), `Cookie` (so also
//!   `Set-Cookie`) and `Api-Key` (so also `X-Api-Key`), followed by `:` or `=`.
//!   The value is redacted to the end of the line (or to the closing quote when
//!   it is quoted, as in JSON); a leading scheme word (`Bearer`, `Basic`, `Token`,
//!   `Digest`, `Negotiate`, `NTLM`) stays readable.
//! - credential parameters: `password`, `passwd`, `secret`, `token`, `api_key`
//!   and `apikey` (so also `access_token`, `client_secret`, ...) followed by `=`,
//!   or by `:` when the key is quoted (`"password": "..."`). The value is redacted
//!   to the next space, tab, `&`, `#`, quote or end of line.
//!
//! It works on bytes (output need not be UTF-8) and on a stream: [`Redactor::push`]
//! emits everything that can no longer begin or be part of a match, so a secret
//! split across reads is still caught. It holds back only a tail that could still
//! begin one (a secret's first bytes, `Auth`, `token` without its `=` yet), and
//! never more than [`Redactor::holdback`] bytes: the longest secret or the 64-byte
//! window of a header, whichever is longer, minus one. Output that cannot begin a
//! match (`42\n`) is emitted at once. Every byte that is not redacted is emitted,
//! once, in order.
//!
//! What it does not defend against: a task that wants to leak a secret it was
//! given can encode it (base64, reversed, one byte per line) and this module will
//! not see it; it stops accidental disclosure (a script echoing its environment, a
//! verbose HTTP client), not exfiltration. Secrets that are not in the vault and
//! not shaped like the patterns above pass through. Held-back bytes are zeroized
//! when the redactor is dropped; copies made by the caller are not.

use std::fmt;
use std::sync::Arc;
use zeroize::{Zeroize as _, Zeroizing};

/// What replaces each redacted run of bytes.
pub const MARKER: &[u8] = b"[REDACTED]";
/// Exact values shorter than this many bytes are not redacted (see the module doc).
pub const MIN_SECRET_LEN: usize = 4;
/// Bytes a pattern may span from its name to the start of its value; the window
/// a header or parameter match needs to see before anything in it is emitted.
const PATTERN_WINDOW: usize = 64;
/// Most spaces or tabs accepted around a pattern's separator and after a scheme.
const MAX_SPACES: usize = 8;

/// How a named pattern's value is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Name: value`: the value runs to the end of the line.
    Header,
    /// `name=value`: the value runs to the next delimiter.
    Param,
}

/// Pattern names, lowercase; matched case-insensitively anywhere in a line.
const NAMES: &[(&[u8], Kind)] = &[
    (b"authorization", Kind::Header),
    (b"cookie", Kind::Header),
    (b"api-key", Kind::Header),
    (b"password", Kind::Param),
    (b"passwd", Kind::Param),
    (b"secret", Kind::Param),
    (b"token", Kind::Param),
    (b"api_key", Kind::Param),
    (b"apikey", Kind::Param),
];

/// Authorization schemes left readable in front of a redacted header value.
const SCHEMES: &[&[u8]] = &[
    b"bearer",
    b"basic",
    b"token",
    b"digest",
    b"negotiate",
    b"ntlm",
];

/// Where a redacted value stops; the stopping byte itself is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Line,
    Quote(u8),
    Word,
}

impl End {
    fn stops_at(self, b: u8) -> bool {
        match self {
            End::Line => is_eol(b),
            End::Quote(q) => b == q || is_eol(b),
            End::Word => is_eol(b) || matches!(b, b' ' | b'\t' | b'&' | b'#' | b'"' | b'\''),
        }
    }
}

fn is_eol(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The immutable part of a redactor, shared by every stream it redacts.
struct Rules {
    /// Exact values, longest first, so the first match at a position is the longest.
    secrets: Vec<Zeroizing<Vec<u8>>>,
    /// Bit `(a << 8) | b` is set when a match can begin with the bytes `a b`.
    pairs: Box<[u64; 1024]>,
    /// The same, for secrets only.
    secret_pairs: Box<[u64; 1024]>,
    /// Bit `a` is set when a match can begin with the byte `a`.
    firsts: [u64; 4],
    /// Bytes after a position that always suffice to decide it.
    lookahead: usize,
}

/// What the bytes at a position say about a header or parameter beginning there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    /// A match whose value begins this many bytes further on.
    Match(usize, End),
    NoMatch,
    /// The bytes so far could begin a match; the next ones decide.
    NeedMore,
}

/// The index of the byte pair `a b` in a pair bit set.
fn pair(a: u8, b: u8) -> usize {
    (usize::from(a) << 8) | usize::from(b)
}

fn bit(set: &[u64], k: usize) -> bool {
    set[k >> 6] & (1 << (k & 63)) != 0
}

impl Rules {
    fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut secrets: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .filter(|v| v.as_ref().len() >= MIN_SECRET_LEN)
            .map(|v| Zeroizing::new(v.as_ref().to_vec()))
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let mut pairs = Box::new([0u64; 1024]);
        let mut secret_pairs = Box::new([0u64; 1024]);
        let mut firsts = [0u64; 4];
        for s in &secrets {
            let k = pair(s[0], s[1]);
            secret_pairs[k >> 6] |= 1 << (k & 63);
        }
        pairs.copy_from_slice(&secret_pairs[..]);
        let mut mark = |a: u8, b: u8| {
            let k = pair(a, b);
            pairs[k >> 6] |= 1 << (k & 63);
        };
        for (name, _) in NAMES {
            let (a, b) = (name[0], name[1]);
            for x in [a, a.to_ascii_uppercase()] {
                for y in [b, b.to_ascii_uppercase()] {
                    mark(x, y);
                }
            }
        }
        for k in (0..1 << 16).filter(|&k| bit(&pairs[..], k)) {
            firsts[k >> 14] |= 1 << ((k >> 8) & 63);
        }
        let longest = secrets.first().map_or(0, |s| s.len());
        Self {
            secrets,
            pairs,
            secret_pairs,
            firsts,
            lookahead: longest.max(PATTERN_WINDOW),
        }
    }

    /// The first position from `from` on where a match may begin, or `buf.len()`.
    /// The last byte of an unfinished stream counts if a match may begin with it.
    fn next_candidate(&self, buf: &[u8], from: usize, end_of_stream: bool) -> usize {
        let len = buf.len();
        let found = buf
            .get(from..)
            .unwrap_or_default()
            .windows(2)
            .position(|w| bit(&self.pairs[..], pair(w[0], w[1])));
        match found {
            Some(i) => from + i,
            None if !end_of_stream
                && from < len
                && bit(&self.firsts, usize::from(buf[len - 1])) =>
            {
                len - 1
            }
            None => len,
        }
    }

    /// The length of the longest secret occurring at `p`.
    fn secret_at(&self, buf: &[u8], p: usize) -> Option<usize> {
        let rest = &buf[p..];
        if rest.len() < MIN_SECRET_LEN || !bit(&self.secret_pairs[..], pair(rest[0], rest[1])) {
            return None;
        }
        self.secrets
            .iter()
            .find(|s| rest.starts_with(s))
            .map(|s| s.len())
    }

    /// Whether what begins at `p` can be decided from the bytes received so far
    /// (more are coming): no secret is cut off by the end of `buf` while matching
    /// so far, and no header or parameter still could be.
    fn decidable(&self, buf: &[u8], p: usize) -> bool {
        let rest = &buf[p..];
        !self
            .secrets
            .iter()
            .any(|s| s.len() > rest.len() && s.starts_with(rest))
            && self.pattern_at(buf, p, false) != Parse::NeedMore
    }

    /// A header or parameter whose name begins at `p`.
    fn pattern_at(&self, buf: &[u8], p: usize, end_of_stream: bool) -> Parse {
        let window = &buf[p..buf.len().min(p + PATTERN_WINDOW)];
        // Bytes past the window never matter; bytes past the end of `buf` may.
        let more = !end_of_stream && p + PATTERN_WINDOW > buf.len();
        let mut result = Parse::NoMatch;
        let first = buf[p].to_ascii_lowercase();
        for (name, kind) in NAMES.iter().filter(|(name, _)| name[0] == first) {
            let head = &window[..window.len().min(name.len())];
            if !head.eq_ignore_ascii_case(&name[..head.len()]) {
                continue;
            }
            let parse = if head.len() < name.len() {
                if more {
                    Parse::NeedMore
                } else {
                    Parse::NoMatch
                }
            } else {
                value_offset(&Cursor { w: window, more }, name.len(), *kind)
            };
            match parse {
                Parse::Match(..) => return parse,
                Parse::NeedMore => result = Parse::NeedMore,
                Parse::NoMatch => {}
            }
        }
        result
    }
}

/// A pattern's window; `more` when bytes past its end are still to come.
struct Cursor<'a> {
    w: &'a [u8],
    more: bool,
}

impl Cursor<'_> {
    /// The byte at `i`: `None` past the end of a finished window, and the parse
    /// undecided (`Err`) past the end of one that continues.
    fn at(&self, i: usize) -> Result<Option<u8>, Parse> {
        match self.w.get(i) {
            Some(&b) => Ok(Some(b)),
            None if self.more => Err(Parse::NeedMore),
            None => Ok(None),
        }
    }

    /// Skips at most [`MAX_SPACES`] spaces or tabs from `i`; `None` when there are more.
    fn spaces(&self, i: usize) -> Result<Option<usize>, Parse> {
        let n = self
            .w
            .get(i..)
            .map_or(0, |r| r.iter().take_while(|&&b| is_space(b)).count());
        if n > MAX_SPACES {
            return Ok(None);
        }
        self.at(i + n)?;
        Ok(Some(i + n))
    }

    /// The end of an authorization scheme word and the spaces after it, at `i`.
    fn scheme_end(&self, i: usize) -> Result<Option<usize>, Parse> {
        let rest = self.w.get(i..).unwrap_or_default();
        for s in SCHEMES {
            let head = &rest[..rest.len().min(s.len())];
            if !head.eq_ignore_ascii_case(&s[..head.len()]) {
                continue;
            }
            self.at(i + s.len() - 1)?;
            if head.len() < s.len() {
                continue;
            }
            let gap = rest[s.len()..].iter().take_while(|&&b| is_space(b)).count();
            if (1..=MAX_SPACES).contains(&gap) {
                self.at(i + s.len() + gap)?;
                return Ok(Some(i + s.len() + gap));
            }
            if gap == 0 {
                self.at(i + s.len())?;
            }
        }
        Ok(None)
    }
}

/// Parses what follows a pattern name (at `i`) up to the value.
fn value_offset(c: &Cursor<'_>, i: usize, kind: Kind) -> Parse {
    match parse_value(c, i, kind) {
        Ok(p) | Err(p) => p,
    }
}

fn parse_value(c: &Cursor<'_>, mut i: usize, kind: Kind) -> Result<Parse, Parse> {
    let quoted_key = matches!(c.at(i)?, Some(b'"' | b'\''));
    if quoted_key {
        i += 1;
    }
    let Some(at) = c.spaces(i)? else {
        return Ok(Parse::NoMatch);
    };
    let separated = match (kind, c.at(at)?) {
        (_, Some(b'=')) | (Kind::Header, Some(b':')) => true,
        (Kind::Param, Some(b':')) => quoted_key,
        _ => false,
    };
    if !separated {
        return Ok(Parse::NoMatch);
    }
    let Some(mut i) = c.spaces(at + 1)? else {
        return Ok(Parse::NoMatch);
    };
    let quote = match c.at(i)? {
        Some(q @ (b'"' | b'\'')) => {
            i += 1;
            Some(q)
        }
        _ => None,
    };
    if kind == Kind::Header {
        if let Some(after) = c.scheme_end(i)? {
            i = after;
        }
    }
    let end = match (quote, kind) {
        (Some(q), _) => End::Quote(q),
        (None, Kind::Header) => End::Line,
        (None, Kind::Param) => End::Word,
    };
    Ok(Parse::Match(i, end))
}

/// A streaming redactor for one output stream (see the module doc).
pub struct Redactor {
    rules: Arc<Rules>,
    /// Bytes received and not yet decided.
    pending: Vec<u8>,
    /// Offset in `pending` up to which a secret occurrence covers the bytes.
    secret_end: usize,
    /// Offset in `pending` where a matched pattern's value begins, and its end.
    value_at: Option<(usize, End)>,
    /// Set while inside a pattern's value.
    in_value: Option<End>,
    /// The last thing emitted was a marker: a redacted run continues.
    in_run: bool,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.rules.secrets.len())
            .field("holdback", &self.holdback())
            .finish_non_exhaustive()
    }
}

impl Drop for Redactor {
    fn drop(&mut self) {
        self.pending.zeroize();
    }
}

impl Redactor {
    /// A redactor for these exact values (values shorter than [`MIN_SECRET_LEN`]
    /// bytes are ignored) and the built-in patterns.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Self::with_rules(Arc::new(Rules::new(values)))
    }

    fn with_rules(rules: Arc<Rules>) -> Self {
        Self {
            rules,
            pending: Vec::new(),
            secret_end: 0,
            value_at: None,
            in_value: None,
            in_run: false,
        }
    }

    /// A redactor for another stream: the same values, nothing pending.
    pub fn fresh(&self) -> Self {
        Self::with_rules(Arc::clone(&self.rules))
    }

    /// How many exact values are redacted (after dropping short ones and duplicates).
    pub fn secret_count(&self) -> usize {
        self.rules.secrets.len()
    }

    /// The most bytes [`push`](Self::push) keeps back between calls (it keeps
    /// back only bytes that could begin a match).
    pub fn holdback(&self) -> usize {
        self.rules.lookahead - 1
    }

    /// Takes the next chunk of the stream and returns the redacted bytes that are
    /// now decided.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + MARKER.len());
        self.push_into(chunk, &mut out);
        out
    }

    /// [`push`](Self::push), appending to `out`.
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(chunk);
        self.scan(out, false);
    }

    /// Ends the stream: returns the redacted bytes still held back. The redactor
    /// can then be used for a new stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending.len() + MARKER.len());
        self.scan(&mut out, true);
        out
    }

    /// Redacts a whole buffer as one stream.
    pub fn redact(&self, input: &[u8]) -> Vec<u8> {
        let mut r = self.fresh();
        let mut out = r.push(input);
        out.extend_from_slice(&r.finish());
        out
    }

    /// Decides every position it can (all of them at the end of the stream) and
    /// drops them from `pending`. A position is decided once it has `lookahead`
    /// bytes after it, or earlier when no match beginning there is still possible.
    fn scan(&mut self, out: &mut Vec<u8>, end_of_stream: bool) {
        let len = self.pending.len();
        let sure = if end_of_stream {
            len
        } else {
            (len + 1).saturating_sub(self.rules.lookahead)
        };
        let mut p = 0;
        while p < len {
            if p >= self.secret_end && self.value_at.is_none() && self.in_value.is_none() {
                let q = self.rules.next_candidate(&self.pending, p, end_of_stream);
                if q > p {
                    out.extend_from_slice(&self.pending[p..q]);
                    self.in_run = false;
                    p = q;
                    continue;
                }
            }
            if p >= sure && !self.rules.decidable(&self.pending, p) {
                break;
            }
            self.step(p, out, end_of_stream);
            p += 1;
        }
        let limit = p;
        self.pending.drain(..limit);
        self.secret_end = self.secret_end.saturating_sub(limit);
        // Positions before `limit` were all stepped while a value was pending,
        // so a pending value begins at or after `limit`.
        self.value_at = self.value_at.map(|(v, end)| (v - limit, end));
        if end_of_stream {
            self.pending.zeroize();
            self.secret_end = 0;
            self.value_at = None;
            self.in_value = None;
            self.in_run = false;
        }
    }

    /// Decides the byte at `p`: records matches beginning there, then emits the
    /// byte or (once per redacted run) the marker.
    fn step(&mut self, p: usize, out: &mut Vec<u8>, end_of_stream: bool) {
        let b = self.pending[p];
        if let Some(n) = self.rules.secret_at(&self.pending, p) {
            self.secret_end = self.secret_end.max(p + n);
        }
        match self.value_at {
            Some((v, end)) if v == p => {
                self.value_at = None;
                self.in_value = Some(end);
            }
            None if self.in_value.is_none() && p >= self.secret_end => {
                // Undecided (`NeedMore`) is impossible here: `scan` only steps
                // positions it can decide.
                if let Parse::Match(offset, end) =
                    self.rules.pattern_at(&self.pending, p, end_of_stream)
                {
                    self.value_at = Some((p + offset, end));
                }
            }
            _ => {}
        }
        if self.in_value.is_some_and(|end| end.stops_at(b)) {
            self.in_value = None;
        }
        if p < self.secret_end || self.in_value.is_some() {
            if !self.in_run {
                out.extend_from_slice(MARKER);
                self.in_run = true;
            }
        } else {
            self.in_run = false;
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(secrets: &[&str], input: &str) -> String {
        String::from_utf8(Redactor::new(secrets).redact(input.as_bytes())).unwrap()
    }

    /// Pushes `input` in pieces cut at `cuts` (ascending offsets) and finishes.
    fn streamed(r: &Redactor, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut r = r.fresh();
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts {
            out.extend(r.push(&input[from..c]));
            from = c;
        }
        out.extend(r.push(&input[from..]));
        out.extend(r.finish());
        out
    }

    /// The reference for exact values only: mark every byte of every occurrence,
    /// then replace each maximal marked run with one marker.
    fn naive(secrets: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
        let mut covered = vec![false; input.len()];
        for s in secrets.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
            for i in 0..input.len() {
                if input[i..].starts_with(s) {
                    covered[i..i + s.len()].iter_mut().for_each(|c| *c = true);
                }
            }
        }
        let mut out = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            if !covered[i] {
                out.push(b);
            } else if i == 0 || !covered[i - 1] {
                out.extend_from_slice(MARKER);
            }
        }
        out
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick(&mut self, alphabet: &[u8], len: usize) -> Vec<u8> {
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    #[test]
    fn exact_values_are_replaced_everywhere() {
        assert_eq!(
            redact(
                &["hunter22", "s3cr3t"],
                "pw hunter22 and s3cr3t, again hunter22\n"
            ),
            "pw [REDACTED] and [REDACTED], again [REDACTED]\n"
        );
        assert_eq!(redact(&["hunter22"], "nothing here"), "nothing here");
        assert_eq!(redact(&["hunter22"], "hunter22"), "[REDACTED]");
    }

    #[test]
    fn values_shorter_than_the_minimum_are_not_redacted() {
        let r = Redactor::new(["", "a", "abc", "abcd"]);
        assert_eq!(r.secret_count(), 1);
        assert_eq!(r.redact(b"abc abcd ab"), b"abc [REDACTED] ab");
        assert_eq!(Redactor::new(["x", "on", "1"]).redact(b"on x 1"), b"on x 1");
    }

    #[test]
    fn overlapping_nested_and_adjacent_values_become_one_marker() {
        // Overlapping: neither "ghi" (tail of the second) nor "abc" may survive.
        assert_eq!(
            redact(&["abcdef", "defghi"], "xxabcdefghiyy"),
            "xx[REDACTED]yy"
        );
        // Nested: the longer value wins.
        assert_eq!(
            redact(&["secretvalue", "value"], "a secretvalue b value"),
            "a [REDACTED] b [REDACTED]"
        );
        // Adjacent.
        assert_eq!(redact(&["abcd", "wxyz"], "-abcdwxyz-"), "-[REDACTED]-");
        // A run of overlapping occurrences of one value.
        assert_eq!(redact(&["aaaa"], "baaaaaaaaab"), "b[REDACTED]b");
        // Duplicates are harmless.
        assert_eq!(Redactor::new(["abcd", "abcd"]).secret_count(), 1);
    }

    #[test]
    fn a_value_split_at_every_position_is_still_redacted() {
        let secret = "correct-horse-battery-staple";
        let input = format!("before {secret} middle {secret}{secret} after\n");
        let r = Redactor::new([secret]);
        let want = b"before [REDACTED] middle [REDACTED] after\n".to_vec();
        for cut in 0..=input.len() {
            assert_eq!(streamed(&r, input.as_bytes(), &[cut]), want, "cut at {cut}");
        }
        for a in 0..=input.len() {
            for b in a..=input.len() {
                assert_eq!(
                    streamed(&r, input.as_bytes(), &[a, b]),
                    want,
                    "cuts {a} {b}"
                );
            }
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            streamed(&r, input.as_bytes(), &every),
            want,
            "one byte at a time"
        );
    }

    #[test]
    fn streaming_matches_the_reference_on_random_overlapping_input() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // A small alphabet without any pattern name's letters: many overlaps, no patterns.
        let alphabet = b"abcd \n";
        for round in 0..300 {
            let secrets: Vec<Vec<u8>> = (0..1 + rng.below(5))
                .map(|_| {
                    let len = 1 + rng.below(8);
                    rng.pick(b"abcd", len)
                })
                .collect();
            let len = rng.below(200);
            let input = rng.pick(alphabet, len);
            let r = Redactor::new(&secrets);
            let want = naive(&secrets, &input);
            assert_eq!(r.redact(&input), want, "round {round}");
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(input.len() + 1))
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                streamed(&r, &input, &cuts),
                want,
                "round {round}, cuts {cuts:?}"
            );
        }
    }

    #[test]
    fn streaming_matches_one_shot_on_random_pattern_soup() {
        let mut rng = Rng(0xDEC0_DED5_EC12_E700);
        let pieces: &[&[u8]] = &[
            b"Authorization",
            b"authoriz",
            b"Proxy-",
            b"Cookie",
            b"X-Api-Key",
            b":",
            b": ",
            b"=",
            b"\"",
            b"'",
            b" ",
            b"\t",
            b"        ",
            b"\n",
            b"\r\n",
            b"Bearer ",
            b"basic",
            b"token",
            b"password",
            b"secret",
            b"&",
            b"#",
            b"abc",
            b"42",
            b"hunter22",
            b"hunt",
            b"er22",
            b"\xff",
        ];
        let r = Redactor::new(["hunter22", "er22hunt"]);
        for round in 0..500 {
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                input.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            let want = r.redact(&input);
            let mut cuts: Vec<usize> = (0..rng.below(8))
                .map(|_| rng.below(input.len() + 1))
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                streamed(&r, &input, &cuts),
                want,
                "round {round}: {:?} cut at {cuts:?}",
                String::from_utf8_lossy(&input)
            );
            let every: Vec<usize> = (1..input.len()).collect();
            assert_eq!(
                streamed(&r, &input, &every),
                want,
                "round {round}, byte by byte"
            );
        }
    }

    #[test]
    fn nothing_is_lost_when_nothing_matches() {
        let mut rng = Rng(42);
        let r = Redactor::new(["zzzzzzzz-never-present"]);
        // Printable text without pattern names, and every byte value.
        let text: Vec<u8> = b"The quick brown fox jumps over the lazy dog 0123456789\n"
            .iter()
            .copied()
            .cycle()
            .take(100_000)
            .collect();
        let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        for input in [text, all] {
            let mut cuts: Vec<usize> = (0..50).map(|_| rng.below(input.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(streamed(&r, &input, &cuts), input);
        }
    }

    #[test]
    fn binary_data_passes_through_and_binary_values_are_redacted() {
        let mut rng = Rng(7);
        // High bytes and control bytes only: no letters, so no pattern can match.
        let alphabet: Vec<u8> = (0x80..=0xFFu8).chain(0x00..0x20).collect();
        let input = rng.pick(&alphabet, 10_000);
        assert_eq!(Redactor::new(["plain-secret"]).redact(&input), input);
        let secret = [0xFFu8, 0x00, 0xFE, 0x01, 0x80];
        let mut input = vec![0x10, 0x11];
        input.extend_from_slice(&secret);
        input.push(0x12);
        let mut want = vec![0x10, 0x11];
        want.extend_from_slice(MARKER);
        want.push(0x12);
        assert_eq!(Redactor::new([secret]).redact(&input), want);
    }

    #[test]
    fn multi_line_values_are_redacted() {
        let pem = "-----BEGIN KEY-----\nMIIBVQIBADANBg\nkqhkiG9w0BAQEF\n-----END KEY-----";
        let input = format!("key:\n{pem}\ndone\n");
        assert_eq!(redact(&[pem], &input), "key:\n[REDACTED]\ndone\n");
    }

    #[test]
    fn authorization_headers_are_redacted_to_the_end_of_the_line() {
        let cases = [
            (
                "Authorization: Bearer abc.def.ghi\nnext\n",
                "Authorization: Bearer [REDACTED]\nnext\n",
            ),
            (
                "authorization: basic dXNlcjpwYXNz\r\n",
                "authorization: basic [REDACTED]\r\n",
            ),
            ("AUTHORIZATION:Token xyz", "AUTHORIZATION:Token [REDACTED]"),
            (
                "Proxy-Authorization: Basic Zm9vOmJhcg==\n",
                "Proxy-Authorization: Basic [REDACTED]\n",
            ),
            (
                "> Authorization: raw-api-key-123\n",
                "> Authorization: [REDACTED]\n",
            ),
            (
                "curl -H 'Authorization: Bearer t0k' https://x\n",
                "curl -H 'Authorization: Bearer [REDACTED]\n",
            ),
            (
                "{\"Authorization\": \"Bearer abc\", \"n\": 1}\n",
                "{\"Authorization\": \"Bearer [REDACTED]\", \"n\": 1}\n",
            ),
            (
                "Cookie: session=abc123; theme=dark\n",
                "Cookie: [REDACTED]\n",
            ),
            (
                "< Set-Cookie: sid=xyz; HttpOnly\n",
                "< Set-Cookie: [REDACTED]\n",
            ),
            ("X-Api-Key: k-123456\n", "X-Api-Key: [REDACTED]\n"),
            ("Authorization: Bearer\n", "Authorization: [REDACTED]\n"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(&[], input), want, "{input:?}");
        }
    }

    #[test]
    fn headers_without_a_value_or_separator_are_left_alone() {
        for input in [
            "Authorization:\n",
            "authorization failed for user bob\n",
            "the cookie jar is empty\n",
            "Authorization:          Bearer x\n", // more spaces than any real header has
        ] {
            assert_eq!(redact(&[], input), input, "{input:?}");
        }
    }

    #[test]
    fn credential_parameters_are_redacted_up_to_their_delimiter() {
        let cases = [
            (
                "GET /cb?code=1&access_token=abc123&state=x HTTP/1.1\n",
                "GET /cb?code=1&access_token=[REDACTED]&state=x HTTP/1.1\n",
            ),
            (
                "https://h/?password=hunter2#frag\n",
                "https://h/?password=[REDACTED]#frag\n",
            ),
            (
                "DB_PASSWORD=hunter2 other=1\n",
                "DB_PASSWORD=[REDACTED] other=1\n",
            ),
            (
                "client_secret = 'abc def'\n",
                "client_secret = '[REDACTED]'\n",
            ),
            (
                "{\"password\": \"p@ss w0rd\", \"user\": \"bob\"}\n",
                "{\"password\": \"[REDACTED]\", \"user\": \"bob\"}\n",
            ),
            ("apikey=k1\tnext\n", "apikey=[REDACTED]\tnext\n"),
            ("token=&x=1\n", "token=&x=1\n"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(&[], input), want, "{input:?}");
        }
        for input in [
            "password: is required\n",
            "tokens=5\n",
            "the secret garden\n",
        ] {
            assert_eq!(redact(&[], input), input, "{input:?}");
        }
    }

    #[test]
    fn patterns_split_at_every_position_are_still_redacted() {
        let input =
            b"GET / HTTP/1.1\r\nAuthorization: Bearer eyJhbGciOi.eyJzdWIi.sig\r\nHost: x\r\n\
                      url=https://h/?token=abcdef&x=1 pw hunter22 end\n";
        let r = Redactor::new(["hunter22"]);
        let want = r.redact(input);
        assert_eq!(
            String::from_utf8(want.clone()).unwrap(),
            "GET / HTTP/1.1\r\nAuthorization: Bearer [REDACTED]\r\nHost: x\r\n\
             url=https://h/?token=[REDACTED]&x=1 pw [REDACTED] end\n"
        );
        for cut in 0..=input.len() {
            assert_eq!(streamed(&r, input, &[cut]), want, "cut at {cut}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(streamed(&r, input, &every), want);
    }

    #[test]
    fn a_long_header_value_is_dropped_without_being_held_back() {
        let mut r = Redactor::new(Vec::<&[u8]>::new());
        let mut out = r.push(b"Authorization: Bearer ");
        for _ in 0..1000 {
            let emitted = r.push(&[b'x'; 1024]);
            out.extend(&emitted);
            assert!(
                r.pending.len() <= r.holdback(),
                "{} held back",
                r.pending.len()
            );
        }
        out.extend(r.push(b"\nvisible"));
        out.extend(r.finish());
        assert_eq!(out, b"Authorization: Bearer [REDACTED]\nvisible");
    }

    #[test]
    fn only_a_tail_that_could_begin_a_match_is_held_back() {
        let mut r = Redactor::new(["s3cr3t-value"]);
        assert_eq!(r.push(b"pid 4242\n"), b"pid 4242\n");
        assert_eq!(r.push(b"ok s3cr"), b"ok ");
        assert_eq!(r.push(b"3t"), b"");
        assert_eq!(r.push(b"-valuX!"), b"s3cr3t-valuX!");
        assert_eq!(r.push(b"GET /?tok"), b"GET /?");
        assert_eq!(r.push(b"en"), b"");
        assert_eq!(r.push(b"s=3 Auth"), b"tokens=3 ");
        assert_eq!(r.push(b"orization:"), b"");
        assert_eq!(r.push(b" x\n"), b"Authorization: [REDACTED]\n");
        assert_eq!(r.push(b"s3c"), b"");
        assert_eq!(r.finish(), b"s3c");
    }

    #[test]
    fn holdback_is_bounded_by_the_longest_value_or_the_pattern_window() {
        let short = Redactor::new(["abcdefgh"]);
        assert_eq!(short.holdback(), PATTERN_WINDOW - 1);
        let long = "k".repeat(500);
        let mut r = Redactor::new([long.as_str()]);
        assert_eq!(r.holdback(), 499);
        // Every position of a run of `k` could begin the value: the most is held.
        let mut out = r.push(&[b'.'; 100]);
        for _ in 0..10 {
            out.extend(r.push(&[b'k'; 300]));
            assert!(
                r.pending.len() <= r.holdback(),
                "{} held back",
                r.pending.len()
            );
        }
        out.extend(r.finish());
        let mut want = vec![b'.'; 100];
        want.extend_from_slice(MARKER);
        assert_eq!(out, want);
        assert!(r.pending.is_empty());
    }

    #[test]
    fn a_redactor_is_reusable_after_finish_and_fresh_streams_are_independent() {
        let mut r = Redactor::new(["abcdefgh"]);
        let mut out = r.push(b"xx abcd");
        out.extend(r.finish());
        assert_eq!(out, b"xx abcd");
        let mut out = r.push(b"efgh abcdefgh");
        out.extend(r.finish());
        assert_eq!(out, b"efgh [REDACTED]");
        let mut a = r.fresh();
        let mut b = r.fresh();
        let mut oa = a.push(b"abcd");
        let mut ob = b.push(b"zzzz");
        oa.extend(a.push(b"efgh"));
        ob.extend(b.push(b"efgh"));
        oa.extend(a.finish());
        ob.extend(b.finish());
        assert_eq!(oa, b"[REDACTED]");
        assert_eq!(ob, b"zzzzefgh");
    }

    #[test]
    fn debug_does_not_show_values() {
        let r = Redactor::new(["topsecretvalue"]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("secrets: 1"), "{shown}");
    }
}
