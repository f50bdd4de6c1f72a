//! A seeded random generator for the fuzz and property tests, and their iteration count.

/// A small deterministic pseudo-random generator (xorshift64*) for generating test inputs.
///
/// The same seed gives the same sequence on every machine and run, so a failing fuzz case
/// reproduces from its seed. Not for anything that needs real randomness.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`. Any seed works: it is spread by a multiply and made
    /// odd, so the state is never zero (a zero state would only ever yield zeros).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits (one xorshift64* step).
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`0` when `n` is 0). Slightly biased towards small values when `n`
    /// does not divide 2^64, which does not matter for input generation.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with a probability of `percent` in 100 (0 never, 100 or more always).
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One of `items`, each equally likely.
    ///
    /// Panics when `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random lowercase hexadecimal digits (`0-9a-f`), e.g. for digests and ids.
    pub fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

/// How many rounds a fuzz property runs: the `KRIO_FUZZ_ITERS` environment variable when it is
/// set to a whole number, else `default`.
pub fn iters(default: usize) -> usize {
    std::env::var("KRIO_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(0);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
            assert_eq!(r.below(0), 0);
            assert!(!r.chance(0));
            assert!(r.chance(100));
            assert!([1, 2, 3].contains(r.pick(&[1, 2, 3])));
        }
        let h = r.hex(64);
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
