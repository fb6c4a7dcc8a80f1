//! The engine's view of the router entries, keyed by value: IPv4 hosts (the bulk) in a compact
//! table ([`crowdsec_lapi::U32Table`], 16 bytes a slot), everything else in a `HashMap`.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crowdsec_lapi::{U32Table, Value};

use super::Held;

/// `Value → Held`, compact for IPv4 hosts.
#[derive(Debug, Default, Clone)]
pub(crate) struct HeldMap {
    v4: U32Table<Held>,
    other: HashMap<Value, Held>,
}

impl HeldMap {
    pub(crate) fn get(&self, v: &Value) -> Option<&Held> {
        match v.as_v4_host() {
            Some(a) => self.v4.get(u32::from(a)),
            None => self.other.get(v),
        }
    }

    pub(crate) fn get_mut(&mut self, v: &Value) -> Option<&mut Held> {
        match v.as_v4_host() {
            Some(a) => self.v4.get_mut(u32::from(a)),
            None => self.other.get_mut(v),
        }
    }

    pub(crate) fn insert(&mut self, v: Value, h: Held) -> Option<Held> {
        match v.as_v4_host() {
            Some(a) => self.v4.insert(u32::from(a), h),
            None => self.other.insert(v, h),
        }
    }

    pub(crate) fn remove(&mut self, v: &Value) -> Option<Held> {
        match v.as_v4_host() {
            Some(a) => self.v4.remove(u32::from(a)),
            None => self.other.remove(v),
        }
    }

    pub(crate) fn contains_key(&self, v: &Value) -> bool {
        self.get(v).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.other.len()
    }

    /// Room for `additional` more IPv4 hosts without a resize.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.v4.reserve(additional);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Value, &Held)> + '_ {
        self.v4
            .iter()
            .map(|(a, h)| (Value::from_ip(Ipv4Addr::from(a).into()), h))
            .chain(self.other.iter().map(|(v, h)| (*v, h)))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Held> + '_ {
        self.iter().map(|(_, h)| h)
    }

    /// Heap bytes (the compact table, and the map at its 7/8 load).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.other.capacity() * (std::mem::size_of::<(Value, Held)>() + 1) * 8 / 7
    }
}
