//! Typed reads from the spanned TOML document. A wrong type is reported where
//! it was written and read as "absent", so the walk goes on and collects the
//! rest of the file's errors too.

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    error::{Report, Span},
    suggest,
};

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// One table of the document and how to name it in messages.
pub(super) struct Section<'a, 'i> {
    pub table: &'a DeTable<'i>,
    /// The header (`[limits]`, `[[tier]]`), or the inline table.
    pub span: Span,
    /// `[limits]`, `[[tier]]`, or "the top level".
    pub label: String,
}

impl<'a, 'i> Section<'a, 'i> {
    /// Reports every key that is not in `known`, with the closest known key
    /// when one is near, or what `hint` says about it.
    pub fn check_keys(
        &self,
        known: &[&str],
        hint: impl Fn(&str) -> Option<String>,
        r: &mut Report<'_>,
    ) {
        for (key, _) in self.table.iter() {
            let name = key.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let mut msg = format!("unknown key `{name}` in {}", self.label);
            if let Some(near) = suggest::closest(name, known) {
                msg.push_str(&format!("; did you mean `{near}`?"));
            } else if let Some(h) = hint(name) {
                msg.push_str("; ");
                msg.push_str(&h);
            } else {
                msg.push_str(&format!("; known keys: {}", known.join(", ")));
            }
            r.at(&key.span(), msg);
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.get(key)
    }

    pub fn key_span(&self, key: &str) -> Option<Span> {
        self.table.get_key_value(key).map(|(k, _)| k.span())
    }

    pub fn string(&self, key: &str, like: &str, r: &mut Report<'_>) -> Option<(&'a str, Span)> {
        let v = self.get(key)?;
        as_str(key, v, like, r).map(|s| (s, v.span()))
    }

    pub fn boolean(&self, key: &str, r: &mut Report<'_>) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                r.at(&v.span(), wrong_type(key, "true or false", v, r));
                None
            }
        }
    }

    /// Any integer TOML can write, widened so that range checks see the real
    /// value rather than a wrapped one.
    pub fn integer(&self, key: &str, like: &str, r: &mut Report<'_>) -> Option<(i128, Span)> {
        let v = self.get(key)?;
        as_integer(key, v, like, r).map(|n| (n, v.span()))
    }

    pub fn array(
        &self,
        key: &str,
        like: &str,
        r: &mut Report<'_>,
    ) -> Option<(&'a [Value<'i>], Span)> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Array(a) => Some((a, v.span())),
            _ => {
                r.at(&v.span(), wrong_type(key, like, v, r));
                None
            }
        }
    }

    /// A list of strings; items of another type are reported and skipped.
    pub fn strings(
        &self,
        key: &str,
        like: &str,
        r: &mut Report<'_>,
    ) -> Option<(Vec<(&'a str, Span)>, Span)> {
        let (items, span) = self.array(key, &format!("a list of strings like {like}"), r)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.as_ref(), item.span())),
                _ => {
                    let msg = format!(
                        "`{key}`: expected a string like {like}, found {} in the list",
                        describe(item, r)
                    );
                    r.at(&item.span(), msg);
                }
            }
        }
        Some((out, span))
    }

    /// A sub-table such as `[limits]`.
    pub fn table(&self, key: &str, r: &mut Report<'_>) -> Option<Section<'a, 'i>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Section {
                table: t,
                span: v.span(),
                label: format!("[{key}]"),
            }),
            _ => {
                let like = format!("a table, written [{key}] on a line of its own");
                r.at(&v.span(), wrong_type(key, &like, v, r));
                None
            }
        }
    }

    /// An array of tables such as `[[tier]]`.
    pub fn tables(&self, key: &str, r: &mut Report<'_>) -> Vec<Section<'a, 'i>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let like = format!("tables, each written [[{key}]]");
        let items = match v.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                let msg = format!("`{key}` is a list: write [[{key}]] (two brackets), not [{key}]");
                r.at(&v.span(), msg);
                return Vec::new();
            }
            _ => {
                r.at(&v.span(), wrong_type(key, &like, v, r));
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(Section {
                    table: t,
                    span: item.span(),
                    label: format!("[[{key}]]"),
                }),
                _ => {
                    let msg = format!(
                        "`{key}`: expected {like}, found {} in the list",
                        describe(item, r)
                    );
                    r.at(&item.span(), msg);
                }
            }
        }
        out
    }
}

pub(super) fn as_str<'a>(
    key: &str,
    v: &'a Value<'_>,
    like: &str,
    r: &mut Report<'_>,
) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            r.at(
                &v.span(),
                wrong_type(key, &format!("a string like {like}"), v, r),
            );
            None
        }
    }
}

pub(super) fn as_integer(key: &str, v: &Value<'_>, like: &str, r: &mut Report<'_>) -> Option<i128> {
    match v.get_ref() {
        DeValue::Integer(n) => match i128::from_str_radix(n.as_str(), n.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                let msg = format!("`{key}`: {} is far too large", r.source(&v.span()));
                r.at(&v.span(), msg);
                None
            }
        },
        _ => {
            r.at(
                &v.span(),
                wrong_type(key, &format!("an integer like {like}"), v, r),
            );
            None
        }
    }
}

pub(super) fn wrong_type(key: &str, expected: &str, v: &Value<'_>, r: &Report<'_>) -> String {
    format!("`{key}`: expected {expected}, found {}", describe(v, r))
}

/// A value as the message shows it: its type and, for scalars, the value as
/// written.
pub(super) fn describe(v: &Value<'_>, r: &Report<'_>) -> String {
    match v.get_ref() {
        DeValue::String(s) => format!("string {}", clip(&format!("{:?}", s.as_ref()))),
        DeValue::Integer(_) => format!("integer {}", clip(r.source(&v.span()))),
        DeValue::Float(_) => format!("float {}", clip(r.source(&v.span()))),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "a list".into(),
        DeValue::Table(_) => "a table".into(),
    }
}

/// Keeps a quoted value to one readable line.
pub(super) fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}
