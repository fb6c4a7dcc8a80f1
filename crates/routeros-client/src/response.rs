//! [`Response`]: what one command returns, shared by the handles and the connection driver.

use routeros_proto::Attributes;

/// The outcome of a command run with [`Client::execute`](crate::Client::execute): every `!re` row, then the `!done`
/// attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The `!re` rows in arrival order (none after `!empty`).
    pub rows: Vec<Attributes>,
    /// The attributes of `!done` (e.g. `=ret=` after `add`).
    pub done: Attributes,
}

impl Response {
    /// `=ret=`: the new `.id` after `add`, the count after `count-only`. Taken from `!done`, or
    /// from the first row (`count-only` may put it in an `!re`, `docs/reference/routeros-api.md` §6).
    pub fn ret(&self) -> Option<&[u8]> {
        self.done
            .get("ret")
            .or_else(|| self.rows.first().and_then(|r| r.get("ret")))
    }

    /// [`Response::ret`] as text, if UTF-8.
    pub fn ret_str(&self) -> Option<&str> {
        self.ret().and_then(|r| std::str::from_utf8(r).ok())
    }
}
