mod client_mock;
mod gateway_examples;
mod robustness;
mod vector_suite;
