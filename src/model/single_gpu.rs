//! `[single_gpu]`: the display manager and GPU modules a single-GPU session releases.
//! What the profile says (`Raw*`), what it means, and the rules between them.

use serde::{Deserialize, Serialize};

use super::validator::*;
use super::*;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawSingleGpu {
    pub display_manager: Option<Text>,
    pub modules: Option<TextList>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SingleGpu {
    pub display_manager: String,
    pub modules: Vec<String>,
}

impl Validator {
    pub(super) fn single_gpu(&mut self, raw: &RawProfile, pci: &[PciDevice]) -> Option<SingleGpu> {
        let spanned = raw.single_gpu.as_ref()?;
        let s = spanned.get_ref();
        if pci.is_empty() {
            self.error(
                spanned.span(),
                "single_gpu",
                "a single-GPU session passes a GPU: add the GPU's functions as [[pci]]",
            );
        }
        let display_manager = match &s.display_manager {
            Some(text) if !text.get_ref().is_empty() && !text.get_ref().contains('/') => {
                text.get_ref().clone()
            }
            Some(text) => {
                self.error(
                    text.span(),
                    "single_gpu.display_manager",
                    "give a systemd unit name such as \"display-manager.service\"",
                );
                String::new()
            }
            None => "display-manager.service".to_string(),
        };
        let mut modules = Vec::new();
        if let Some(list) = &s.modules {
            for (index, text) in list.get_ref().iter().enumerate() {
                let name = text.get_ref();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    self.error(
                        text.span(),
                        &format!("single_gpu.modules[{index}]"),
                        format!("`{name}` is not a kernel module name"),
                    );
                    continue;
                }
                modules.push(name.clone());
            }
        }
        Some(SingleGpu {
            display_manager,
            modules,
        })
    }
}
