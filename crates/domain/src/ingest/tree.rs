//! A JSON tree for telemetry bodies that borrows its strings from the body, and knows just
//! enough about a batch to keep memory bounded: the items of an oversized `samples` array, and
//! the contents of arrays inside samples, are counted or skipped rather than stored.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON value whose strings borrow from the body unless they held escapes. An array keeps its
/// items only where its [`Role`] asks (the batch's `samples`): no sample field is an array, and
/// skipping their contents keeps memory proportional to what is checked.
#[derive(Debug)]
pub(super) enum Node<'a> {
    Null,
    Bool,
    Number(f64),
    String(Cow<'a, str>),
    Array { items: Vec<Node<'a>>, len: usize },
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl Node<'_> {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array { .. } => "an array",
            Node::Object(_) => "an object",
        }
    }
}

/// Where a value sits, which decides whether array items are kept.
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    /// Anything inside a sample.
    Value,
    /// The top level of a JSON body: its `samples` member is the sample list.
    Batch { max_samples: usize },
    /// The `samples` array: the first `max_samples` items are kept and the rest only counted, so
    /// an oversized batch costs no memory before it is refused.
    SampleList { max_samples: usize },
}

pub(super) fn parse_node(text: &str, role: Role) -> Result<Node<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let node = role.deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

impl<'de> DeserializeSeed<'de> for Role {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Role {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let keep = match self {
            Role::SampleList { max_samples } => max_samples,
            Role::Value | Role::Batch { .. } => 0,
        };
        let mut items = Vec::new();
        let mut len = 0;
        loop {
            let more = if len < keep {
                let item = seq.next_element_seed(Role::Value)?;
                let more = item.is_some();
                items.extend(item);
                more
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
            len += 1;
        }
        Ok(Node::Array { items, len })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields = Vec::with_capacity(8);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let role = match self {
                Role::Batch { max_samples } if key == "samples" => Role::SampleList { max_samples },
                _ => Role::Value,
            };
            let value = map.next_value_seed(role)?;
            fields.push((key, value));
        }
        Ok(Node::Object(fields))
    }
}

/// An object key, borrowed from the body when it holds no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}
