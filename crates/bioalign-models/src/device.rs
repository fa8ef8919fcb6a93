//! Which backend and device a run uses, chosen at run time (`--device cpu|cuda[:N]|wgpu`).
//!
//! Every name parses in every build; a device whose backend was not compiled in
//! (features `cuda`, `wgpu`) is an error when the run starts, naming the feature.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// The device of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// burn-flex on the host CPU (the default).
    #[default]
    Cpu,
    /// burn-cuda on NVIDIA GPU `N` (feature `cuda`).
    Cuda(usize),
    /// burn-wgpu on the default Vulkan / Metal / DX12 adapter (feature `wgpu`).
    Wgpu,
}

impl DeviceChoice {
    /// Whether this build can run on the device (its backend was compiled in).
    pub fn compiled(self) -> bool {
        match self {
            DeviceChoice::Cpu => true,
            DeviceChoice::Cuda(_) => cfg!(feature = "cuda"),
            DeviceChoice::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// `Ok` when [`Self::compiled`], else an error saying which feature to build with.
    pub fn check_compiled(self) -> Result<()> {
        if self.compiled() {
            return Ok(());
        }
        let feature = match self {
            DeviceChoice::Cuda(_) => "cuda",
            _ => "wgpu",
        };
        Err(Error::Device {
            message: format!(
                "device `{self}` needs the `{feature}` backend, which this build lacks: \
                 rebuild with `--features {feature}`"
            ),
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceChoice::Wgpu => f.write_str("wgpu"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Device {
            message: format!("unknown device `{s}`: expected cpu, cuda, cuda:N or wgpu"),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            "wgpu" | "vulkan" => Ok(DeviceChoice::Wgpu),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_round_trips() {
        for (s, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("CUDA", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            ("wgpu", DeviceChoice::Wgpu),
        ] {
            let d: DeviceChoice = s.parse().unwrap();
            assert_eq!(d, want);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<DeviceChoice>(&json).unwrap(), d);
        }
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
        for bad in ["tpu", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("unknown device"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_backend_not_compiled_in_names_its_feature() {
        assert!(DeviceChoice::Cpu.check_compiled().is_ok());
        let cuda = DeviceChoice::Cuda(0).check_compiled();
        assert_eq!(cuda.is_ok(), cfg!(feature = "cuda"));
        if let Err(e) = cuda {
            assert!(e.to_string().contains("--features cuda"), "{e}");
        }
        let wgpu = DeviceChoice::Wgpu.check_compiled();
        assert_eq!(wgpu.is_ok(), cfg!(feature = "wgpu"));
        if let Err(e) = wgpu {
            assert!(e.to_string().contains("--features wgpu"), "{e}");
        }
    }
}
