//! An MSB-first bit reader over a byte slice, for the codec headers read before a decoder
//! sees a frame (AV1 sequence headers, VP9 uncompressed headers). Every read is bounded:
//! past the end is `None`, never a panic.

pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next `n` bits (n <= 32) as an unsigned number.
    pub(crate) fn f(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    /// Skips an AV1 `uvlc()` value.
    pub(crate) fn uvlc(&mut self) -> Option<()> {
        let mut zeros = 0;
        while self.f(1)? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return Some(());
            }
        }
        self.f(zeros).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_msb_first_and_stops_at_the_end() {
        let mut b = Bits::new(&[0b1010_0000, 0xff]);
        assert_eq!(b.f(3), Some(0b101));
        assert_eq!(b.f(5), Some(0));
        assert_eq!(b.f(8), Some(0xff));
        assert_eq!(b.f(1), None);
        // uvlc: 2 leading zeros, a one, then 2 bits.
        let mut b = Bits::new(&[0b0011_1000]);
        assert_eq!(b.uvlc(), Some(()));
        assert_eq!(b.f(3), Some(0));
    }
}
