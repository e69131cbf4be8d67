//! Value types of command-line arguments that are more than a number: durations, latency ranges,
//! shard specs and per-endpoint rates. Each parses with `FromStr`, so clap reports a bad value as a
//! usage error (exit 2) naming the flag.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::api::Kind;

/// Parse a human duration such as `1s`, `250ms`, `30m` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like `500ms`, `2s` or `5m` ({e})"))
}

/// A per-request latency: a fixed duration, or a range `A..B` drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Always this long (`200ms`).
    Fixed(Duration),
    /// Uniformly between the two, both included (`20ms..200ms`).
    Range(Duration, Duration),
}

impl Latency {
    /// Draw one latency with the given random source.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Range(lo, hi) => {
                let span = hi.saturating_sub(lo).as_nanos() as u64;
                lo + Duration::from_nanos(if span == 0 { 0 } else { rng.u64(0..=span) })
            }
        }
    }
}

impl FromStr for Latency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            None => parse_duration(s).map(Latency::Fixed),
            Some((a, b)) => {
                let (lo, hi) = (parse_duration(a)?, parse_duration(b)?);
                if lo > hi {
                    return Err(format!("latency range `{s}` goes backwards"));
                }
                Ok(Latency::Range(lo, hi))
            }
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
            Latency::Range(a, b) => write!(
                f,
                "{}..{}",
                humantime::format_duration(*a),
                humantime::format_duration(*b)
            ),
        }
    }
}

/// `--shard K/N`: the K-th (1-based) of N disjoint parts of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which part, from 1.
    pub k: u32,
    /// How many parts.
    pub n: u32,
}

impl Shard {
    /// Whether the request with this id belongs to the shard. The id is a UUIDv5 (a SHA-1 digest),
    /// so its leading bits are uniform: the shards are balanced and partition the ids exactly.
    pub fn contains(&self, id: &uuid::Uuid) -> bool {
        let hi = u64::from_be_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"));
        (hi % u64::from(self.n)) as u32 == self.k - 1
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a shard like `2/4` (K of N, 1 ≤ K ≤ N)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: u32 = k.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

/// One `--rate` value: `N` sets every endpoint, `KIND=N` (`txt2img=N`, `model=N`) one of them.
/// `N` is images per rolling minute; 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateArg {
    /// `N`: every endpoint.
    All(u32),
    /// `KIND=N`: one endpoint.
    One(Kind, u32),
}

impl FromStr for RateArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let number = |n: &str| {
            n.trim().parse::<u32>().map_err(|_| {
                format!("`{n}` is not a whole number of images per minute (0 = no limit)")
            })
        };
        match s.split_once('=') {
            None => number(s).map(RateArg::All),
            Some((kind, n)) => {
                let kind = Kind::parse(kind.trim()).ok_or_else(|| {
                    format!(
                        "`{kind}` is not an endpoint: give `N` for both, or `txt2img=N` or `model=N` for one"
                    )
                })?;
                Ok(RateArg::One(kind, number(n)?))
            }
        }
    }
}

impl fmt::Display for RateArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateArg::All(n) => write!(f, "{n}"),
            RateArg::One(kind, n) => write!(f, "{kind}={n}"),
        }
    }
}

/// Images (for `collect`: queries) per rolling minute, per endpoint; 0 is no limit. What the
/// `--rate` values come to: each sets its endpoints in turn, so a later value wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    txt2img: u32,
    model: u32,
}

impl Rates {
    /// The same rate for every endpoint.
    pub fn uniform(n: u32) -> Rates {
        Rates {
            txt2img: n,
            model: n,
        }
    }

    /// `default` for every endpoint, then each value in order (`--rate 100 --rate model=20`:
    /// text-to-image 100, model images 20).
    pub fn from_args(default: u32, args: &[RateArg]) -> Rates {
        let mut rates = Rates::uniform(default);
        for arg in args {
            match *arg {
                RateArg::All(n) => rates = Rates::uniform(n),
                RateArg::One(kind, n) => *rates.slot(kind) = n,
            }
        }
        rates
    }

    /// The rate of `kind`'s endpoint (0: no limit).
    pub fn get(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Txt2Img => self.txt2img,
            Kind::Model => self.model,
        }
    }

    fn slot(&mut self, kind: Kind) -> &mut u32 {
        match kind {
            Kind::Txt2Img => &mut self.txt2img,
            Kind::Model => &mut self.model,
        }
    }
}

/// `100` when every endpoint has the same rate, else `txt2img=100, model=20` (as typed).
impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.txt2img == self.model {
            return write!(f, "{}", self.txt2img);
        }
        let each: Vec<String> = Kind::ALL
            .iter()
            .map(|k| RateArg::One(*k, self.get(*k)).to_string())
            .collect();
        f.write_str(&each.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_per_endpoint_and_later_values_win() {
        let args = |v: &[&str]| -> Result<Vec<RateArg>, String> {
            v.iter().map(|s| s.parse::<RateArg>()).collect()
        };
        assert_eq!("100".parse(), Ok(RateArg::All(100)));
        assert_eq!("model=20".parse(), Ok(RateArg::One(Kind::Model, 20)));
        assert_eq!(" txt2img = 0 ".parse(), Ok(RateArg::One(Kind::Txt2Img, 0)));
        for bad in [
            "",
            "-1",
            "1.5",
            "ten",
            "model=",
            "=5",
            "image=5",
            "Model=5",
            "model=x",
            "model=5=6",
            "4294967296",
        ] {
            assert!(bad.parse::<RateArg>().is_err(), "{bad:?}");
        }
        let err = "image=5".parse::<RateArg>().unwrap_err();
        assert!(err.contains("`image`") && err.contains("model=N"), "{err}");

        let rates = Rates::from_args(100, &args(&["100", "model=20"]).unwrap());
        assert_eq!(
            (rates.get(Kind::Txt2Img), rates.get(Kind::Model)),
            (100, 20)
        );
        assert_eq!(rates.to_string(), "txt2img=100, model=20");
        // A later value wins, whether it sets one endpoint or both.
        let rates = Rates::from_args(100, &args(&["model=20", "50"]).unwrap());
        assert_eq!(rates, Rates::uniform(50));
        assert_eq!(rates.to_string(), "50");
        let rates = Rates::from_args(100, &args(&["model=20", "model=30"]).unwrap());
        assert_eq!(
            (rates.get(Kind::Txt2Img), rates.get(Kind::Model)),
            (100, 30)
        );
        // Nothing given: the default for both.
        assert_eq!(Rates::from_args(100, &[]), Rates::uniform(100));
        assert_eq!(
            Rates::from_args(100, &args(&["txt2img=0"]).unwrap()).get(Kind::Txt2Img),
            0
        );
        for a in ["100", "model=20", "txt2img=0"] {
            assert_eq!(a.parse::<RateArg>().unwrap().to_string(), a);
        }
    }

    #[test]
    fn latency_parses_fixed_and_ranges() {
        assert_eq!(
            "50ms".parse::<Latency>(),
            Ok(Latency::Fixed(Duration::from_millis(50)))
        );
        assert_eq!(
            "20ms..200ms".parse::<Latency>(),
            Ok(Latency::Range(
                Duration::from_millis(20),
                Duration::from_millis(200)
            ))
        );
        assert!("200ms..20ms".parse::<Latency>().is_err());
        let mut rng = fastrand::Rng::with_seed(1);
        let l: Latency = "20ms..30ms".parse().unwrap();
        for _ in 0..100 {
            let d = l.sample(&mut rng);
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(30));
        }
    }

    proptest::proptest! {
        /// The N shards partition the ids: each id is in exactly one shard.
        #[test]
        fn shards_partition_ids(n in 1u32..12, seeds in proptest::collection::vec(proptest::prelude::any::<u128>(), 1..200)) {
            for seed in seeds {
                let id = uuid::Uuid::new_v5(&crate::ids::NAMESPACE, &seed.to_le_bytes());
                let owners = (1..=n).filter(|k| Shard { k: *k, n }.contains(&id)).count();
                proptest::prop_assert_eq!(owners, 1);
            }
        }
    }

    #[test]
    fn shard_parses_and_rejects() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { k: 2, n: 4 }));
        for bad in ["0/4", "5/4", "1/0", "x/2", "3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
