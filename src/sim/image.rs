//! The images the simulator "generates": small PNG tiles whose colours and pattern derive from the
//! request's hash and the image index, so a contact sheet of a sweep shows visibly different tiles
//! while the same request always yields the same bytes.
//!
//! The PNG is written by hand (8-bit RGB, zlib with stored blocks, CRC-32 and Adler-32): a few
//! dozen lines instead of an image library, and every viewer reads it.

/// Side of a tile, in pixels.
pub(crate) const SIDE: usize = 128;

/// The PNG of image `index` of the request with body hash `hash`.
pub(crate) fn tile(hash: u64, index: usize) -> Vec<u8> {
    let pixels = paint(hash, index);
    encode_png(SIDE as u32, SIDE as u32, &pixels)
}

/// RGB pixels, row by row.
fn paint(hash: u64, index: usize) -> Vec<u8> {
    let bits = super::hash::mix(hash ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let hue = (bits & 0xfff) as f64 / 4096.0;
    let fg = hsv(hue, 0.75, 0.95);
    let bg = hsv((hue + 0.5) % 1.0, 0.45, 0.35);
    let pattern = (bits >> 12) & 3;
    let period = 8 + ((bits >> 14) & 15) as usize * 2;
    let mut out = Vec::with_capacity(SIDE * SIDE * 3);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let on = match pattern {
                0 => (x / period + y / period).is_multiple_of(2),
                1 => (x + y) % period < period / 2,
                2 => {
                    let (dx, dy) = (x as i64 - 64, y as i64 - 64);
                    ((dx * dx + dy * dy) as f64).sqrt() as usize % period < period / 2
                }
                _ => y % period < period / 2,
            };
            out.extend_from_slice(if on { &fg } else { &bg });
        }
    }
    out
}

fn hsv(h: f64, s: f64, v: f64) -> [u8; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    let (r, g, b) = match i as i64 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// What a template cover shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cover {
    /// A standing figure, a dress's flare for `Woman`.
    Human { woman: bool },
    /// A horizon and a sun, or a room with a window.
    Scene { outdoor: bool },
}

/// The cover of a template (`seed`: a hash of its id), `width` pixels wide and a third taller: a
/// flat four-colour drawing, as a 2-bit palette PNG (a 512 px cover is under 100 KiB even with
/// stored, uncompressed blocks).
pub(crate) fn cover(seed: u64, what: Cover, width: usize) -> Vec<u8> {
    let height = width * 4 / 3;
    let bits = super::hash::mix(seed);
    let hue = (bits & 0xfff) as f64 / 4096.0;
    let palette = [
        hsv(hue, 0.18, 0.96),
        hsv(hue, 0.55, 0.45),
        hsv((hue + 0.08) % 1.0, 0.35, 0.78),
        hsv((hue + 0.5) % 1.0, 0.6, 0.85),
    ];
    let (w, h) = (width as f64, height as f64);
    let shade = |x: f64, y: f64| -> u8 {
        match what {
            Cover::Human { woman } => {
                let (dx, dy) = (x - 0.5, (y - 0.22) * 0.75);
                let head = dx * dx + dy * dy < 0.09 * 0.09;
                let half = if (0.33..0.70).contains(&y) {
                    0.17 - (y - 0.33) * 0.12
                } else if woman && (0.70..0.84).contains(&y) {
                    0.13 + (y - 0.70) * 0.9
                } else {
                    0.0
                };
                let legs = (0.70..0.95).contains(&y)
                    && ((x - 0.44).abs() < 0.035 || (x - 0.56).abs() < 0.035);
                if head || (x - 0.5).abs() < half || legs {
                    1
                } else if y > 0.9 {
                    2
                } else {
                    0
                }
            }
            Cover::Scene { outdoor: true } => {
                let (dx, dy) = (x - 0.72, (y - 0.22) * 0.75);
                let hill = 0.62 - 0.06 * (x * 9.0 + (bits >> 20 & 7) as f64).sin();
                if dx * dx + dy * dy < 0.11 * 0.11 {
                    3
                } else if y > hill {
                    if y > 0.8 { 1 } else { 2 }
                } else {
                    0
                }
            }
            Cover::Scene { outdoor: false } => {
                let window = (0.2..0.8).contains(&x) && (0.12..0.52).contains(&y);
                let bars = (x - 0.5).abs() < 0.012 || (y - 0.32).abs() < 0.009;
                if window {
                    if bars { 1 } else { 3 }
                } else if y > 0.74 {
                    2
                } else if (y - 0.74).abs() < 0.012 {
                    1
                } else {
                    0
                }
            }
        }
    };
    let mut indices = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            indices.push(shade((x as f64 + 0.5) / w, (y as f64 + 0.5) / h));
        }
    }
    encode_png_2bit(width as u32, height as u32, &palette, &indices)
}

/// Encode 2-bit palette pixels (indices 0–3 into `palette`) as a PNG.
fn encode_png_2bit(width: u32, height: u32, palette: &[[u8; 3]; 4], indices: &[u8]) -> Vec<u8> {
    let row = (width as usize).div_ceil(4);
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in indices.chunks(width as usize) {
        raw.push(0);
        for four in line.chunks(4) {
            let mut byte = 0u8;
            for (i, px) in four.iter().enumerate() {
                byte |= (px & 3) << (6 - 2 * i);
            }
            raw.push(byte);
        }
    }
    // 2 bits, palette.
    assemble(width, height, [2, 3], Some(palette.as_flattened()), &raw)
}

/// A PNG of `raw` scanlines (each led by its filter byte): `format` is the bit depth and colour
/// type of the header (deflate, no filter set, no interlace); `palette` is the `PLTE` chunk.
fn assemble(
    width: u32,
    height: u32,
    format: [u8; 2],
    palette: Option<&[u8]>,
    raw: &[u8],
) -> Vec<u8> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[format[0], format[1], 0, 0, 0]);
    let mut png = Vec::with_capacity(raw.len() + raw.len() / 65535 * 5 + 96);
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    chunk(&mut png, b"IHDR", &ihdr);
    if let Some(palette) = palette {
        chunk(&mut png, b"PLTE", palette);
    }
    chunk(&mut png, b"IDAT", &zlib_stored(raw));
    chunk(&mut png, b"IEND", &[]);
    png
}

/// Encode 8-bit RGB pixels as a PNG.
fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let row = width as usize * 3;
    // Scanlines, each prefixed with filter type 0 (none).
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in rgb.chunks(row) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    // 8 bits, RGB.
    assemble(width, height, [8, 2], None, &raw)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of uncompressed ("stored") deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 11);
    out.extend_from_slice(&[0x78, 0x01]); // deflate, 32 KiB window, no dictionary; 0x7801 % 31 == 0
    let mut blocks = data.chunks(65535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = block.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_their_reference_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        assert_eq!(adler32(&vec![0xff; 100_000]), {
            let (mut a, mut b) = (1u64, 0u64);
            for _ in 0..100_000 {
                a = (a + 0xff) % 65521;
                b = (b + a) % 65521;
            }
            ((b << 16) | a) as u32
        });
    }

    #[test]
    fn tiles_are_png_of_the_right_size_and_differ_by_request() {
        let png = tile(42, 0);
        let size = imagesize::blob_size(&png).unwrap();
        assert_eq!((size.width, size.height), (SIDE, SIDE));
        assert_eq!(png, tile(42, 0));
        assert_ne!(png, tile(43, 0));
        assert_ne!(png, tile(42, 1));
    }

    #[test]
    fn covers_are_palette_png_of_the_asked_width() {
        for what in [
            Cover::Human { woman: true },
            Cover::Human { woman: false },
            Cover::Scene { outdoor: true },
            Cover::Scene { outdoor: false },
        ] {
            let png = cover(7, what, 512);
            let size = imagesize::blob_size(&png).unwrap();
            assert_eq!((size.width, size.height), (512, 682));
            assert!(png.len() < 100 << 10, "{}", png.len());
            assert!(png.ends_with(b"IEND\xAE\x42\x60\x82"));
        }
        assert_ne!(
            cover(7, Cover::Human { woman: true }, 64),
            cover(8, Cover::Human { woman: true }, 64)
        );
    }

    #[test]
    fn zlib_splits_large_data_into_stored_blocks() {
        let data = vec![7u8; 150_000];
        let z = zlib_stored(&data);
        // header + 3 blocks × 5 bytes + data + adler
        assert_eq!(z.len(), 2 + 3 * 5 + data.len() + 4);
        assert_eq!(z[2], 0, "first block is not the last");
    }
}
