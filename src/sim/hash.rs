//! Stable hashing. Task ids, fault decisions and generated images must come out the same in every
//! process, on every machine and with every Rust release, so nothing here may use `std`'s randomly
//! keyed (and unspecified) hasher: this is FNV-1a over bytes, finished with the SplitMix64 mixer.

use serde_json::Value;

/// FNV-1a, 64 bits. Feed bytes, then [`Fnv::finish`] mixes the state so that every output bit
/// depends on every input bit (plain FNV has weak low bits).
#[derive(Debug, Clone)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Fnv {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Fnv {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// The SplitMix64 finaliser: a bijection on `u64` that spreads every input bit over the output.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a JSON value that ignores whitespace and the order of object keys, so the same request
/// hashes the same however a client serialises it.
pub(crate) fn json(value: &Value) -> u64 {
    let mut h = Fnv::new();
    feed(&mut h, value);
    h.finish()
}

fn feed(h: &mut Fnv, value: &Value) {
    match value {
        Value::Null => {
            h.bytes(&[0]);
        }
        Value::Bool(b) => {
            h.bytes(&[1, u8::from(*b)]);
        }
        Value::Number(n) => {
            h.bytes(&[2]);
            if let Some(i) = n.as_i64() {
                h.bytes(b"i").u64(i as u64);
            } else if let Some(u) = n.as_u64() {
                h.bytes(b"u").u64(u);
            } else {
                h.bytes(b"f").u64(n.as_f64().unwrap_or(0.0).to_bits());
            }
        }
        Value::String(s) => {
            h.bytes(&[3]).u64(s.len() as u64).bytes(s.as_bytes());
        }
        Value::Array(items) => {
            h.bytes(&[4]).u64(items.len() as u64);
            for item in items {
                feed(h, item);
            }
        }
        Value::Object(map) => {
            // Sorted explicitly: with serde_json's `preserve_order` feature (which another crate
            // in the build may switch on) the map keeps insertion order.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            h.bytes(&[5]).u64(keys.len() as u64);
            for key in keys {
                h.u64(key.len() as u64).bytes(key.as_bytes());
                feed(h, &map[key]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_hash_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[true,null,"x"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "b" : [true, null, "x"], "a" : 1 }"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":2,"b":[true,null,"x"]}"#).unwrap();
        assert_eq!(json(&a), json(&b));
        assert_ne!(json(&a), json(&c));
    }

    #[test]
    fn hashes_are_stable_across_builds() {
        // Task ids written by one build must be readable by the next: pin the function.
        assert_eq!(Fnv::new().finish(), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(Fnv::new().bytes(b"a").finish(), mix(0xaf63_dc4c_8601_ec8c));
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
    }
}
