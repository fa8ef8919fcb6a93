//! A minimal PNG encoder for 8-bit RGB images (no external image crate).
//!
//! Layout per the PNG specification (ISO/IEC 15948): signature, `IHDR`, one
//! zlib-compressed `IDAT` of filter-type-0 scanlines, `IEND`; each chunk ends with
//! the CRC-32 of its type and data.

use std::io::Write;

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as PNG uses it.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
}

fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    for &b in bytes {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xFFFF_FFFF, kind), data) ^ 0xFFFF_FFFF;
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes a `width` x `height` RGB8 buffer (row-major, 3 bytes per pixel) as PNG.
///
/// Returns `None` if the buffer length is not `width * height * 3` or a side is 0.
pub fn encode_rgb(rgb: &[u8], width: u32, height: u32) -> Option<Vec<u8>> {
    let row = width as usize * 3;
    if width == 0 || height == 0 || rgb.len() != row * height as usize {
        return None;
    }
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in rgb.chunks_exact(row) {
        raw.push(0); // filter type 0 (None)
        raw.extend_from_slice(line);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).ok()?;
    let idat = z.finish().ok()?;

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // depth 8, colour type RGB, deflate, filter 0, no interlace

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(&SIGNATURE);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Some(out)
}

/// Decodes a PNG written by [`encode_rgb`] back to its RGB8 buffer (tests only:
/// one `IDAT`, filter type 0 on every line, as this encoder writes them).
#[cfg(test)]
pub(crate) fn decode_rgb(png: &[u8]) -> (u32, u32, Vec<u8>) {
    use std::io::Read;
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    let len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&png[41..41 + len])
        .read_to_end(&mut raw)
        .unwrap();
    let rgb = raw
        .chunks(width as usize * 3 + 1)
        .flat_map(|row| row[1..].iter().copied())
        .collect();
    (width, height, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn crc32_matches_known_check_value() {
        // The standard CRC-32 check value of "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // CRC of the IEND chunk type, present in every PNG file.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn encodes_decodable_png() {
        let (w, h) = (3u32, 2u32);
        let rgb: Vec<u8> = (0..(w * h * 3) as u8).collect();
        let png = encode_rgb(&rgb, w, h).unwrap();
        assert_eq!(&png[..8], &SIGNATURE);
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), w);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), h);
        // Decompress IDAT and check the scanlines come back.
        let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&png[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), (w as usize * 3 + 1) * h as usize);
        assert_eq!(&raw[1..10], &rgb[..9]);
        assert!(png.ends_with(&[0xAE, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn rejects_wrong_buffer_length() {
        assert!(encode_rgb(&[0; 5], 1, 2).is_none());
        assert!(encode_rgb(&[], 0, 0).is_none());
    }
}
