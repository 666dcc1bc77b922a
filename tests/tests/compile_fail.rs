//! Compile-fail tests: a memory budget smaller than the plan is a compile error.

#[test]
fn budget_exceeded_fails_to_compile() {
    trybuild::TestCases::new().compile_fail("tests/compile_fail/*.rs");
}
