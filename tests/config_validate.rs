//! Every optimizer and model hyper-parameter is checked where it enters, with an error naming
//! the field, before any data is read: a run with beta1 = 1 or eps = 0 fails at once instead of
//! training into NaN.

use gpt::model::transformer::TransformerConfig;
use gpt::model::GptConfig;
use gpt::train::TrainConfig;
use gpt::translate::trainer::TranslateConfig;

/// Asserts that `r` is an error naming `field` (`invalid {field}: ...`).
fn names(r: gpt::Result<()>, field: &str) {
    match r {
        Ok(()) => panic!("{field}: accepted"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(&format!("invalid {field}:")), "{field}: {e}");
        }
    }
}

#[test]
fn gpt_training_hyper_parameters_are_validated_naming_the_field() {
    let ok = TrainConfig::default();
    assert!(ok.validate().is_ok());
    let cases: Vec<(TrainConfig, &str)> = vec![
        (
            TrainConfig {
                beta1: 1.0,
                ..TrainConfig::default()
            },
            "beta1",
        ),
        (
            TrainConfig {
                beta1: -0.5,
                ..TrainConfig::default()
            },
            "beta1",
        ),
        (
            TrainConfig {
                beta2: 1.5,
                ..TrainConfig::default()
            },
            "beta2",
        ),
        (
            TrainConfig {
                beta2: f32::NAN,
                ..TrainConfig::default()
            },
            "beta2",
        ),
        (
            TrainConfig {
                weight_decay: -0.1,
                ..TrainConfig::default()
            },
            "weight_decay",
        ),
        (
            TrainConfig {
                weight_decay: f32::INFINITY,
                ..TrainConfig::default()
            },
            "weight_decay",
        ),
        (
            TrainConfig {
                grad_clip: -1.0,
                ..TrainConfig::default()
            },
            "grad_clip",
        ),
        (
            TrainConfig {
                grad_clip: f32::NAN,
                ..TrainConfig::default()
            },
            "grad_clip",
        ),
        (
            TrainConfig {
                lr: 0.0,
                ..TrainConfig::default()
            },
            "lr",
        ),
        (
            TrainConfig {
                lr: f32::NAN,
                ..TrainConfig::default()
            },
            "lr",
        ),
        (
            TrainConfig {
                min_lr: Some(1.0),
                ..TrainConfig::default()
            },
            "min_lr",
        ),
        (
            TrainConfig {
                min_lr: Some(-1e-4),
                ..TrainConfig::default()
            },
            "min_lr",
        ),
        (
            TrainConfig {
                min_lr: Some(f32::NAN),
                ..TrainConfig::default()
            },
            "min_lr",
        ),
    ];
    for (c, field) in cases {
        names(c.validate(), field);
    }
    // Clipping off (0) stays allowed, and min_lr may equal lr (a constant schedule).
    assert!(TrainConfig {
        grad_clip: 0.0,
        ..TrainConfig::default()
    }
    .validate()
    .is_ok());
    assert!(TrainConfig {
        min_lr: Some(1e-3),
        lr: 1e-3,
        ..TrainConfig::default()
    }
    .validate()
    .is_ok());
}

#[test]
fn translation_training_hyper_parameters_are_validated_naming_the_field() {
    assert!(TranslateConfig::default().validate().is_ok());
    let cases: Vec<(TranslateConfig, &str)> = vec![
        (
            TranslateConfig {
                beta1: 1.0,
                ..TranslateConfig::default()
            },
            "beta1",
        ),
        (
            TranslateConfig {
                beta2: -0.1,
                ..TranslateConfig::default()
            },
            "beta2",
        ),
        (
            TranslateConfig {
                eps: 0.0,
                ..TranslateConfig::default()
            },
            "eps",
        ),
        (
            TranslateConfig {
                eps: -1e-9,
                ..TranslateConfig::default()
            },
            "eps",
        ),
        (
            TranslateConfig {
                grad_clip: -1.0,
                ..TranslateConfig::default()
            },
            "grad_clip",
        ),
        (
            TranslateConfig {
                lr_scale: f32::INFINITY,
                ..TranslateConfig::default()
            },
            "lr_scale",
        ),
        (
            TranslateConfig {
                label_smoothing: 1.0,
                ..TranslateConfig::default()
            },
            "label_smoothing",
        ),
        (
            TranslateConfig {
                max_minutes: Some(0.0),
                ..TranslateConfig::default()
            },
            "max_minutes",
        ),
    ];
    for (c, field) in cases {
        names(c.validate(), field);
    }
}

#[test]
fn layer_norm_eps_and_dropout_are_validated_in_both_model_configs() {
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        names(
            GptConfig {
                ln_eps: eps,
                ..GptConfig::tiny(65)
            }
            .validate(),
            "ln_eps",
        );
        let t = TransformerConfig::preset("transformer-small", 100, [0, 1, 2]).unwrap();
        names(TransformerConfig { ln_eps: eps, ..t }.validate(), "ln_eps");
    }
    names(
        GptConfig {
            dropout: 1.0,
            ..GptConfig::tiny(65)
        }
        .validate(),
        "dropout",
    );
}

#[test]
fn a_saved_model_config_with_a_bad_value_is_refused_naming_the_file_and_field() {
    let dir = std::env::temp_dir().join(format!("gpt-cfg-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = GptConfig {
        ln_eps: 0.0,
        ..GptConfig::tiny(65)
    };
    let json = gpt::model::checkpoint::hf_config(&cfg, None);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    let err = gpt::model::checkpoint::load_config(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("ln_eps"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
