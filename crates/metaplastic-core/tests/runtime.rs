use metaplastic_core::{runtime, tensor_io::{round_trip, HostTensor}, Error};

#[test]
fn info_reports_the_linked_libtorch() {
    let info = runtime::info();
    assert!(info.torch_version.starts_with("2.11.0"), "{}", info.torch_version);
    assert!(info.threads >= 1);
    assert_eq!(info.device == "cpu", !info.cuda_available);
}

#[test]
fn host_tensor_round_trip_is_exact() {
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 3.0).collect();
    let t = HostTensor::new(data.clone(), vec![2, 3, 4]).unwrap();
    let back = round_trip(&t).unwrap();
    assert_eq!(back, t);
}

#[test]
fn shape_mismatch_is_an_error_with_code() {
    let err = HostTensor::new(vec![1.0; 5], vec![2, 3]).unwrap_err();
    assert_eq!(err.code(), "E_SHAPE");
    assert!(matches!(err, Error::Shape(_)));
}

#[test]
fn non_finite_data_is_detected() {
    let t = HostTensor::new(vec![1.0, f32::NAN], vec![2]).unwrap();
    let err = t.check_finite("targets").unwrap_err();
    assert!(err.to_string().contains("targets"), "{err}");
}

#[test]
fn parse_device_rejects_unknown_names() {
    assert_eq!(runtime::parse_device("cpu").unwrap(), tch::Device::Cpu);
    let err = runtime::parse_device("tpu").unwrap_err();
    assert_eq!(err.code(), "E_CONFIG");
}
