//! Lengths inside audio metadata, checked before symphonia reads them.
//!
//! symphonia 0.5.5 sizes buffers from lengths written inside metadata before it knows the
//! bytes are there: a FLAC picture's mime type, description and data (symphonia-metadata
//! `flac.rs`), each Vorbis comment (`vorbis.rs`, `vec![0; comment_length]`) and a picture
//! carried base64-encoded inside a comment (`METADATA_BLOCK_PICTURE`). A crafted 4 GiB
//! length aborts the process on allocation under a memory limit, which no `catch_unwind`
//! stops (the audio fuzz target found the picture's twice). These readers are reached from
//! native FLAC metadata blocks and from Ogg streams (Vorbis and Opus comment packets, Ogg
//! FLAC's blocks), so both are walked first, the way symphonia will walk them, and a length
//! that does not fit in what holds it is refused. Anything else is left to the decoder.

use std::io::{Read, SeekFrom};

use symphonia::core::checksum::Crc32;
use symphonia::core::io::{MediaSource, Monitor};

/// How far symphonia's probe looks for a format marker, and how much of an Ogg stream is
/// walked (its header packets come first).
const HEAD: u64 = 1 << 20;

/// FLAC metadata block types whose contents symphonia sizes buffers from.
const APPLICATION: u8 = 2;
const VORBIS_COMMENT: u8 = 4;
const PICTURE: u8 = 6;

/// Checks the metadata of the stream in `source`, then rewinds it.
pub(crate) fn check(source: &mut dyn MediaSource) -> Result<(), String> {
    let verdict = walk(source);
    source.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    verdict
}

fn walk(source: &mut dyn MediaSource) -> Result<(), String> {
    let mut head = Vec::new();
    if (&mut *source).take(HEAD).read_to_end(&mut head).is_err() {
        return Ok(()); // unreadable: the decoder says so
    }
    match first_marker(&head) {
        Some((Container::Flac, at)) => flac(source, at as u64 + 4),
        Some((Container::Ogg, at)) => ogg(&head[at..]),
        None => Ok(()),
    }
}

enum Container {
    Flac,
    Ogg,
}

/// The container symphonia's probe will pick and where its marker starts: the earliest of
/// the markers its enabled readers register (WAV's, MP3's, FLAC's, Ogg's), past any ID3v2
/// tag, which the probe reads and steps over.
fn first_marker(head: &[u8]) -> Option<(Container, usize)> {
    const MP3: [u8; 6] = [0xfa, 0xfb, 0xf2, 0xf3, 0xe2, 0xe3];
    let mut at = 0;
    while at + 4 <= head.len() {
        let w = &head[at..at + 4];
        match w {
            b"fLaC" => return Some((Container::Flac, at)),
            b"OggS" => return Some((Container::Ogg, at)),
            b"RIFF" => return None,
            [0xff, b, ..] if MP3.contains(b) => return None,
            [b'I', b'D', b'3', _] if at + 10 <= head.len() => {
                let h = &head[at..at + 10];
                let size = h[6..10]
                    .iter()
                    .fold(0usize, |n, &b| (n << 7) | usize::from(b & 0x7f));
                let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
                at += 10 + size + footer;
            }
            _ => at += 1,
        }
    }
    None
}

/// Native FLAC: the metadata blocks after the `fLaC` marker at `start`.
fn flac(source: &mut dyn MediaSource, start: u64) -> Result<(), String> {
    if source.seek(SeekFrom::Start(start)).is_err() {
        return Ok(());
    }
    // A real file has a handful of metadata blocks; a crafted one is not walked for ever.
    for _ in 0..1024 {
        let mut header = [0u8; 4];
        if source.read_exact(&mut header).is_err() {
            return Ok(());
        }
        let kind = header[0] & 0x7f;
        let len = u32::from_be_bytes([0, header[1], header[2], header[3]]);
        // Only comments and pictures are read in (what the file holds of them: a cut block
        // is checked against that); the other blocks need their header alone.
        let mut body = Vec::new();
        if matches!(kind, VORBIS_COMMENT | PICTURE) {
            if (&mut *source)
                .take(u64::from(len))
                .read_to_end(&mut body)
                .is_err()
            {
                return Ok(());
            }
        } else if source.seek(SeekFrom::Current(i64::from(len))).is_err() {
            return Ok(());
        }
        flac_block(kind, len, &body)?;
        if header[0] & 0x80 != 0 {
            break;
        }
    }
    Ok(())
}

/// One FLAC metadata block of `kind` whose header says `len` bytes and that holds `body`.
fn flac_block(kind: u8, len: u32, body: &[u8]) -> Result<(), String> {
    match kind {
        // symphonia reads `len - 4` bytes of application data: a shorter block wraps.
        APPLICATION if len < 4 => Err(format!(
            "a FLAC application block of {len} bytes (it needs at least 4)"
        )),
        VORBIS_COMMENT => comments(body),
        PICTURE => picture(body),
        _ => Ok(()),
    }
}

fn be_u32(b: &[u8], at: usize) -> Option<usize> {
    let b = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn le_u32(b: &[u8], at: usize) -> Option<usize> {
    let b = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// A picture block: type, mime length and mime, description length and description, four
/// u32 sizes, data length and data; every length must fit in what is left of the block.
fn picture(block: &[u8]) -> Result<(), String> {
    let mut at = 4usize;
    // The mime type, the description (then width, height, depth, colours), the data.
    for skip_after in [0usize, 16, 0] {
        let Some(n) = be_u32(block, at) else {
            return Ok(());
        };
        if n > block.len() - at - 4 {
            return Err(format!(
                "a FLAC picture block declares {n} bytes in a block of {}",
                block.len()
            ));
        }
        at += 4 + n + skip_after;
    }
    Ok(())
}

/// Vorbis comments without framing (little-endian): vendor length and vendor, a count,
/// then each comment's length and text. A picture inside a comment is checked as well.
fn comments(block: &[u8]) -> Result<(), String> {
    let too_long = |n: usize| {
        format!(
            "a Vorbis comment declares {n} bytes in a block of {}",
            block.len()
        )
    };
    let Some(vendor) = le_u32(block, 0) else {
        return Ok(());
    };
    if vendor > block.len() - 4 {
        return Err(too_long(vendor));
    }
    let mut at = 4 + vendor;
    let Some(count) = le_u32(block, at) else {
        return Ok(());
    };
    at += 4;
    // Each comment takes at least its 4-byte length: the count cannot outrun the block.
    for _ in 0..count {
        let Some(n) = le_u32(block, at) else {
            return Ok(());
        };
        at += 4;
        if n > block.len() - at {
            return Err(too_long(n));
        }
        comment_picture(&block[at..at + n])?;
        at += n;
    }
    Ok(())
}

/// A `METADATA_BLOCK_PICTURE=<base64>` comment, recognised and decoded as symphonia does,
/// holds a picture block.
fn comment_picture(comment: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(comment);
    let Some((key, value)) = text.split_once('=') else {
        return Ok(());
    };
    if key.to_lowercase() != "metadata_block_picture" {
        return Ok(());
    }
    match base64(value) {
        Some(block) => picture(&block),
        None => Ok(()), // symphonia ignores what it cannot decode
    }
}

/// RFC 4648 base64 as symphonia decodes it: padding trimmed, any other symbol outside the
/// alphabet fails the whole value.
fn base64(text: &str) -> Option<Vec<u8>> {
    let sym = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        if chunk.len() == 1 {
            break; // one symbol left over decodes to nothing
        }
        let mut bits = 0u32;
        for &c in chunk {
            bits = (bits << 6) | sym(c)?;
        }
        bits <<= 6 * (4 - chunk.len());
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// An Ogg stream's first pages: their packets, stream by stream, as symphonia's page
/// reader assembles them (a page whose CRC is wrong is skipped and the search for the next
/// page goes on from just past its marker).
fn ogg(head: &[u8]) -> Result<(), String> {
    // Header packets come in the first pages: a crafted run of markers, each a page to
    // checksum, is not followed for ever.
    const PAGES: usize = 4096;
    const STREAMS: usize = 64;
    let mut streams: Vec<OggStream> = Vec::new();
    let mut at = 0;
    for _ in 0..PAGES {
        let Some(found) = find(&head[at..], b"OggS") else {
            break;
        };
        let page_at = at + found;
        at = page_at + 4;
        let Some(page) = OggPage::parse(&head[page_at..]) else {
            if page_at + 27 > head.len() {
                break;
            }
            continue;
        };
        if !page.crc_ok {
            continue;
        }
        at = page_at + page.len;
        let stream = match streams.iter().position(|s| s.serial == page.serial) {
            Some(i) => &mut streams[i],
            None if streams.len() == STREAMS => break,
            None => {
                streams.push(OggStream {
                    serial: page.serial,
                    partial: Vec::new(),
                    packets: 0,
                    flac: false,
                });
                streams.last_mut().expect("just pushed")
            }
        };
        stream.page(&page)?;
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct OggPage<'a> {
    serial: u32,
    continuation: bool,
    /// Segment lengths.
    lacing: &'a [u8],
    body: &'a [u8],
    /// The whole page's length.
    len: usize,
    crc_ok: bool,
}

impl<'a> OggPage<'a> {
    /// The page at the start of `b`, or `None` when its header is invalid or cut short.
    fn parse(b: &'a [u8]) -> Option<Self> {
        let header = b.get(..27)?;
        if header[4] != 0 || header[5] & 0xf8 != 0 {
            return None;
        }
        let n = usize::from(header[26]);
        let lacing = b.get(27..27 + n)?;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let len = 27 + n + body_len;
        let page = b.get(..len)?;
        let mut crc = Crc32::new(0);
        crc.process_buf_bytes(&page[..22]);
        crc.process_buf_bytes(&[0; 4]);
        crc.process_buf_bytes(&page[26..]);
        let want = u32::from_le_bytes([header[22], header[23], header[24], header[25]]);
        Some(OggPage {
            serial: u32::from_le_bytes([header[14], header[15], header[16], header[17]]),
            continuation: header[5] & 1 != 0,
            lacing,
            body: &page[27 + n..],
            len,
            crc_ok: crc.crc() == want,
        })
    }
}

/// One logical stream's packets as they are put together.
struct OggStream {
    serial: u32,
    partial: Vec<u8>,
    packets: usize,
    /// Ogg FLAC: its packets after the first are FLAC metadata blocks.
    flac: bool,
}

impl OggStream {
    fn page(&mut self, page: &OggPage) -> Result<(), String> {
        if !page.continuation {
            self.partial.clear();
        }
        let mut at = 0;
        for &l in page.lacing {
            let l = usize::from(l);
            self.partial.extend_from_slice(&page.body[at..at + l]);
            at += l;
            if l < 255 {
                let packet = std::mem::take(&mut self.partial);
                self.packet(&packet)?;
            }
        }
        Ok(())
    }

    fn packet(&mut self, p: &[u8]) -> Result<(), String> {
        self.packets += 1;
        if self.packets == 1 {
            self.flac = p.starts_with(b"\x7fFLAC");
        } else if self.flac && p.len() >= 4 {
            let len = u32::from_be_bytes([0, p[1], p[2], p[3]]);
            return flac_block(p[0] & 0x7f, len, &p[4..]);
        }
        if let Some(c) = p.strip_prefix(b"\x03vorbis") {
            comments(c)
        } else if let Some(c) = p.strip_prefix(b"OpusTags") {
            comments(c)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_as_rfc4648() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64("aGk").unwrap(), b"hi");
        assert_eq!(base64("YWJj").unwrap(), b"abc");
        assert!(base64("a b=").is_none());
    }

    fn comment_block(comments: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"vnd");
        b.extend_from_slice(&(comments.len() as u32).to_le_bytes());
        for c in comments {
            b.extend_from_slice(&(c.len() as u32).to_le_bytes());
            b.extend_from_slice(c);
        }
        b
    }

    #[test]
    fn comments_that_fit_pass_and_a_long_one_is_refused() {
        assert!(comments(&comment_block(&[b"TITLE=a", b"ARTIST=b"])).is_ok());
        let mut b = comment_block(&[b"TITLE=a"]);
        let n = b.len();
        b[n - 11..n - 7].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = comments(&b).unwrap_err();
        assert!(err.contains("4294967295 bytes"), "{err}");
        let mut v = comment_block(&[]);
        v[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(comments(&v).is_err());
    }

    #[test]
    fn a_picture_inside_a_comment_is_checked() {
        // Type 3, then a mime length near 4 GiB: "AAAAA/////w==" is 00 00 00 03 ff ff ff fc.
        let bad = comment_block(&[b"metadata_block_picture=AAAAA/////w=="]);
        assert!(comments(&bad).unwrap_err().contains("picture"));
        // Unicode lowercasing, as symphonia matches the key: the Kelvin sign is a 'k'.
        let kelvin = "METADATA_BLOC\u{212a}_PICTURE=AAAAA/////w==";
        assert!(comments(&comment_block(&[kelvin.as_bytes()])).is_err());
        let fine = comment_block(&[b"METADATA_BLOCK_PICTURE=AAAAAwAAAAA="]);
        assert!(comments(&fine).is_ok());
    }

    #[test]
    fn an_application_block_too_short_for_its_id_is_refused() {
        assert!(flac_block(APPLICATION, 3, &[]).is_err());
        assert!(flac_block(APPLICATION, 4, &[]).is_ok());
    }

    #[test]
    fn the_marker_symphonia_finds_first_decides() {
        assert!(matches!(
            first_marker(b"xxfLaC...."),
            Some((Container::Flac, 2))
        ));
        assert!(first_marker(b"RIFF....fLaC").is_none());
        // An ID3v2 tag is stepped over, whatever it holds.
        let mut id3 = b"ID3\x04\x00\x00\x00\x00\x00\x04fLaCOggS".to_vec();
        id3.extend_from_slice(b"....");
        assert!(matches!(first_marker(&id3), Some((Container::Ogg, 14))));
    }
}
