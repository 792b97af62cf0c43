//! Silero VAD v6 (16 kHz): the probability that a 32 ms chunk holds speech, with state
//! carried across chunks (snakers4/silero-vad; layout of `silero_vad_16k.safetensors`,
//! documented in `fixtures/reference/silero-vad/ARCHITECTURE.md`).
//!
//! ```text
//! x = last 64 samples of the previous chunk ++ 512 new samples           [576]
//! reflect-pad 64 on the right; STFT as a conv (258 = 129 re + 129 im, k 256, s 128)
//! |STFT| -> conv k3 s1 -> ReLU -> conv s2 -> ReLU -> conv s2 -> ReLU -> conv s1 -> ReLU  [128]
//! LSTM cell (h, c carried) -> ReLU -> 1x1 conv -> sigmoid                   probability
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig1d};
use burn::tensor::activation::{relu, sigmoid, tanh};
use burn::tensor::{Device, Tensor, TensorData};

pub const CHUNK: usize = 512;
pub const CONTEXT: usize = 64;
const PAD: usize = 64;
const HIDDEN: usize = 128;
const BINS: usize = 129;

#[derive(Debug, thiserror::Error)]
pub enum SileroError {
    #[error("cannot read the VAD weights {path}: {reason}")]
    Weights { path: String, reason: String },
}

#[derive(Config, Debug)]
pub struct SileroConfig {}

/// The `If` branch of `silero_vad.onnx` taken at 16 kHz (the other is the 8 kHz model).
const ONNX_BRANCH: &str = "If_0/then_branch";

/// The ONNX constant holding a safetensors tensor (`TENSOR_MAPPING.md`; same layouts).
fn onnx_name(safetensors: &str) -> &str {
    match safetensors {
        "stft_conv.weight" => "stft.forward_basis_buffer",
        "conv1.weight" => "encoder.0.reparam_conv.weight",
        "conv1.bias" => "encoder.0.reparam_conv.bias",
        "conv2.weight" => "encoder.1.reparam_conv.weight",
        "conv2.bias" => "encoder.1.reparam_conv.bias",
        "conv3.weight" => "encoder.2.reparam_conv.weight",
        "conv3.bias" => "encoder.2.reparam_conv.bias",
        "conv4.weight" => "encoder.3.reparam_conv.weight",
        "conv4.bias" => "encoder.3.reparam_conv.bias",
        "lstm_cell.weight_ih" => "decoder.rnn.weight_ih",
        "lstm_cell.weight_hh" => "decoder.rnn.weight_hh",
        "lstm_cell.bias_ih" => "decoder.rnn.bias_ih",
        "lstm_cell.bias_hh" => "decoder.rnn.bias_hh",
        "final_conv.weight" => "decoder.decoder.2.weight",
        "final_conv.bias" => "decoder.decoder.2.bias",
        other => other,
    }
}

/// The encoder's convolutions: `(in, out, stride)`, kernel 3, zero padding 1.
const ENCODER: [(usize, usize, usize); 4] =
    [(BINS, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)];

#[derive(Module, Debug)]
pub struct Silero {
    /// Hann-windowed DFT basis as a convolution: `[258, 1, 256]`, stride 128.
    pub stft: Conv1d,
    pub encoder: Vec<Conv1d>,
    /// LSTM cell input and recurrent maps, `[128] -> [512]` each (gates i, f, g, o).
    pub lstm_ih: Linear,
    pub lstm_hh: Linear,
    /// `[128] -> [1]`.
    pub decoder: Linear,
}

fn param<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), device))
}

/// What the model carries from one chunk to the next.
#[derive(Debug, Clone)]
pub struct VadState {
    h: Tensor<2>,
    c: Tensor<2>,
    context: Vec<f32>,
}

impl SileroConfig {
    pub fn stft_config(&self) -> Conv1dConfig {
        Conv1dConfig::new(1, 2 * BINS, 256)
            .with_stride(128)
            .with_bias(false)
    }

    pub fn encoder_configs(&self) -> Vec<Conv1dConfig> {
        ENCODER
            .iter()
            .map(|&(i, o, s)| {
                Conv1dConfig::new(i, o, 3)
                    .with_stride(s)
                    .with_padding(PaddingConfig1d::Explicit(1, 1))
            })
            .collect()
    }

    pub fn init(&self, device: &Device) -> Silero {
        Silero {
            stft: self.stft_config().init(device),
            encoder: self
                .encoder_configs()
                .iter()
                .map(|c| c.init(device))
                .collect(),
            lstm_ih: LinearConfig::new(HIDDEN, 4 * HIDDEN).init(device),
            lstm_hh: LinearConfig::new(HIDDEN, 4 * HIDDEN).init(device),
            decoder: LinearConfig::new(HIDDEN, 1).init(device),
        }
    }
}

impl Silero {
    /// Loads the weights from `silero_vad.onnx` (the official v6.2 model, whose 16 kHz
    /// branch holds them as constants) or from `silero_vad_16k.safetensors` (a nearby but
    /// different checkpoint: see `fixtures/reference/silero-vad/WEIGHTS.md`), by extension.
    pub fn load(path: &std::path::Path, device: &Device) -> Result<Self, SileroError> {
        let fail = |reason: String| SileroError::Weights {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("onnx") => {
                let tensors =
                    crate::onnx::float_tensors(&bytes).map_err(|e| fail(e.to_string()))?;
                Self::from_weights(
                    |name, shape| {
                        let t = crate::onnx::find(&tensors, ONNX_BRANCH, onnx_name(name), shape)
                            .map_err(|e| fail(e.to_string()))?;
                        Ok(t.data.clone())
                    },
                    device,
                )
            }
            Some("safetensors") => {
                let file = safetensors::SafeTensors::deserialize(&bytes)
                    .map_err(|e| fail(e.to_string()))?;
                let shown = path.display().to_string();
                let weights = crate::weights::Weights::new(&file, &shown);
                Self::from_weights(
                    |name, shape| {
                        let floats = weights
                            .floats(name, shape)
                            .map_err(|e| fail(e.problem.to_string()))?;
                        Ok(floats.into_owned())
                    },
                    device,
                )
            }
            _ => Err(fail("expected a .onnx or .safetensors file".into())),
        }
    }

    /// Builds the model from `get(name, shape)`, names as in the safetensors file.
    fn from_weights(
        get: impl Fn(&str, &[usize]) -> Result<Vec<f32>, SileroError>,
        device: &Device,
    ) -> Result<Self, SileroError> {
        let config = SileroConfig::new();
        let mut stft = config.stft_config().init(device);
        stft.weight = param(
            get("stft_conv.weight", &[2 * BINS, 1, 256])?,
            [2 * BINS, 1, 256],
            device,
        );
        let mut encoder = Vec::new();
        for (k, (c, &(i, o, _))) in config.encoder_configs().iter().zip(&ENCODER).enumerate() {
            let mut conv = c.init(device);
            let name = format!("conv{}", k + 1);
            conv.weight = param(
                get(&format!("{name}.weight"), &[o, i, 3])?,
                [o, i, 3],
                device,
            );
            conv.bias = Some(param(get(&format!("{name}.bias"), &[o])?, [o], device));
            encoder.push(conv);
        }
        // torch keeps [out, in]; burn's Linear multiplies by [in, out].
        let linear = |w: &str, b: &str, d_in: usize, d_out: usize| -> Result<Linear, SileroError> {
            let weight = Tensor::<2>::from_data(
                TensorData::new(get(w, &[d_out, d_in])?, [d_out, d_in]),
                device,
            )
            .transpose();
            Ok(Linear {
                weight: Param::from_tensor(weight),
                bias: Some(param(get(b, &[d_out])?, [d_out], device)),
            })
        };
        let lstm_ih = linear(
            "lstm_cell.weight_ih",
            "lstm_cell.bias_ih",
            HIDDEN,
            4 * HIDDEN,
        )?;
        let lstm_hh = linear(
            "lstm_cell.weight_hh",
            "lstm_cell.bias_hh",
            HIDDEN,
            4 * HIDDEN,
        )?;
        let decoder = Linear {
            weight: Param::from_tensor(
                Tensor::<2>::from_data(
                    TensorData::new(get("final_conv.weight", &[1, HIDDEN, 1])?, [1, HIDDEN]),
                    device,
                )
                .transpose(),
            ),
            bias: Some(param(get("final_conv.bias", &[1])?, [1], device)),
        };
        Ok(Silero {
            stft,
            encoder,
            lstm_ih,
            lstm_hh,
            decoder,
        })
    }

    /// Zero state and context, as at the start of a stream.
    pub fn start(&self, device: &Device) -> VadState {
        VadState {
            h: Tensor::zeros([1, HIDDEN], device),
            c: Tensor::zeros([1, HIDDEN], device),
            context: vec![0.0; CONTEXT],
        }
    }

    /// The speech probability of the next 512 samples (a shorter last chunk is padded with
    /// zeros), updating `state`.
    ///
    /// `features = relu(conv4(…relu(conv1(|STFT(reflect_pad(context ++ chunk))|))))`,
    /// `h, c = LSTMCell(features, h, c)`, `p = σ(w · relu(h) + b)`.
    ///
    /// # Shapes
    /// - chunk: up to 512 samples
    /// - state: `h`, `c` `[1, 128]`, context 64 samples
    pub fn forward(&self, chunk: &[f32], state: &mut VadState) -> f32 {
        let device = state.h.device();
        let mut x = Vec::with_capacity(CONTEXT + CHUNK + PAD);
        x.extend_from_slice(&state.context);
        x.extend(chunk.iter().take(CHUNK));
        x.resize(CONTEXT + CHUNK, 0.0);
        state.context = x[CHUNK..].to_vec();
        // Reflect on the right, the edge sample not repeated.
        let n = x.len();
        for m in 0..PAD {
            x.push(x[n - 2 - m]);
        }
        let len = x.len();
        let x = Tensor::<3>::from_data(TensorData::new(x, [1, 1, len]), &device);
        let spec = self.stft.forward(x);
        let [_, _, frames] = spec.dims();
        let re = spec.clone().narrow(1, 0, BINS);
        let im = spec.narrow(1, BINS, BINS);
        let mut h = (re.clone() * re + im.clone() * im).sqrt();
        debug_assert_eq!(frames, 4);
        for conv in &self.encoder {
            h = relu(conv.forward(h));
        }
        let feature = h.reshape([1, HIDDEN]);
        let z = self.lstm_ih.forward(feature) + self.lstm_hh.forward(state.h.clone());
        let gate = |k: usize| z.clone().narrow(1, k * HIDDEN, HIDDEN);
        let (i, f, g, o) = (
            sigmoid(gate(0)),
            sigmoid(gate(1)),
            tanh(gate(2)),
            sigmoid(gate(3)),
        );
        let c = f * state.c.clone() + i * g;
        let h = o * tanh(c.clone());
        state.c = c;
        state.h = h.clone();
        let p = sigmoid(self.decoder.forward(relu(h)));
        p.into_data().try_to_vec::<f32>().map_or(0.0, |v| v[0])
    }
}
