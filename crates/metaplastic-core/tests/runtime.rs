use metaplastic_core::{
    runtime,
    tensor_io::{round_trip, HostTensor},
    Error,
};

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

/// The operation counter on hand examples: N calls from outside count N, whatever they call inside.
#[test]
fn operations_are_counted_once_each() {
    use tch::{Kind, Tensor};
    let x = Tensor::ones([3, 4, 5], (Kind::Float, tch::Device::Cpu));
    let w = Tensor::ones([3, 5, 2], (Kind::Float, tch::Device::Cpu));
    let (_, adds) = metaplastic_core::runtime::count_ops(|| {
        let mut y = x.shallow_clone();
        for _ in 0..10 {
            y = y.f_add_scalar(1.0).unwrap();
        }
        y
    })
    .unwrap();
    assert_eq!(adds, 10);
    // matmul dispatches bmm (and views) inside: still one operation from the caller's side.
    let (_, products) = metaplastic_core::runtime::count_ops(|| x.matmul(&w)).unwrap();
    assert_eq!(products, 1);
    let (_, none) = metaplastic_core::runtime::count_ops(|| 1 + 1).unwrap();
    assert_eq!(none, 0);
    // Nested counting is refused, and the counter works again afterwards.
    let nested = metaplastic_core::runtime::count_ops(|| metaplastic_core::runtime::count_ops(|| ()).is_err()).unwrap();
    assert!(nested.0);
    assert_eq!(metaplastic_core::runtime::count_ops(|| x.f_neg().unwrap()).unwrap().1, 1);
    // Work that panics leaves the counter usable.
    let panicked = std::panic::catch_unwind(|| metaplastic_core::runtime::count_ops(|| panic!("inside a count")));
    assert!(panicked.is_err());
    assert_eq!(metaplastic_core::runtime::count_ops(|| x.f_neg().unwrap()).unwrap().1, 1);
}
