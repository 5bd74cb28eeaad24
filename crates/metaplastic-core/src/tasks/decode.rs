//! Image decoding (the `image` crate: PNG and JPEG) and resizing, in parallel over the CPU cores.
use super::images::Channels;
use crate::{Error, Result};
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

/// Resampling filter. `triangle` (the default) is bilinear interpolation whose support widens with the
/// downscaling factor, i.e. antialiased like PIL's BILINEAR used by torchvision's `Resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResizeFilter {
    Nearest,
    #[default]
    Triangle,
    CatmullRom,
    Gaussian,
    Lanczos3,
}

impl ResizeFilter {
    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::Nearest => "nearest",
            ResizeFilter::Triangle => "triangle",
            ResizeFilter::CatmullRom => "catmullRom",
            ResizeFilter::Gaussian => "gaussian",
            ResizeFilter::Lanczos3 => "lanczos3",
        }
    }

    fn to_image(self) -> FilterType {
        match self {
            ResizeFilter::Nearest => FilterType::Nearest,
            ResizeFilter::Triangle => FilterType::Triangle,
            ResizeFilter::CatmullRom => FilterType::CatmullRom,
            ResizeFilter::Gaussian => FilterType::Gaussian,
            ResizeFilter::Lanczos3 => FilterType::Lanczos3,
        }
    }
}

/// Decodes one image file's bytes, converts it to `channels`, resizes it to size×size and writes it
/// channels-first into `out` (len channels·size·size). `name` is used in the error.
pub fn decode_into(
    bytes: &[u8],
    name: &str,
    channels: Channels,
    size: u32,
    filter: ResizeFilter,
    out: &mut [u8],
) -> Result<()> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::Data(format!("cannot decode image {name}: {e}")))?;
    let resize = |w: u32, h: u32| w != size || h != size;
    match channels {
        Channels::Gray => {
            let mut g = img.to_luma8();
            if resize(g.width(), g.height()) {
                g = image::imageops::resize(&g, size, size, filter.to_image());
            }
            out.copy_from_slice(g.as_raw());
        }
        Channels::Rgb => {
            let mut c = img.to_rgb8();
            if resize(c.width(), c.height()) {
                c = image::imageops::resize(&c, size, size, filter.to_image());
            }
            let plane = (size * size) as usize;
            for (i, px) in c.as_raw().chunks_exact(3).enumerate() {
                for k in 0..3 {
                    out[k * plane + i] = px[k];
                }
            }
        }
    }
    Ok(())
}

/// Decodes many images in parallel. `load(i)` yields image i's bytes and name (it may read a file);
/// the result holds the images one after another, in index order. The first failing index's error wins.
pub fn decode_all<'a, F>(n: usize, channels: Channels, size: u32, filter: ResizeFilter, load: F) -> Result<Vec<u8>>
where
    F: Fn(usize) -> Result<(std::borrow::Cow<'a, [u8]>, String)> + Sync,
{
    let per = channels.count() * (size * size) as usize;
    let mut out = vec![0u8; n * per];
    if n == 0 {
        return Ok(out);
    }
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).min(n);
    let chunk = n.div_ceil(threads);
    let errors: Vec<Option<Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(chunk * per)
            .enumerate()
            .map(|(c, buf)| {
                let load = &load;
                s.spawn(move || {
                    for (j, img) in buf.chunks_mut(per).enumerate() {
                        let i = c * chunk + j;
                        let r =
                            load(i).and_then(|(bytes, name)| decode_into(&bytes, &name, channels, size, filter, img));
                        if let Err(e) = r {
                            return Some(e);
                        }
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Some(Error::Internal("image decoder thread panicked".into()))))
            .collect()
    });
    match errors.into_iter().flatten().next() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
