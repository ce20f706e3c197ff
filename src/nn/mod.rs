//! Modules over the kernels: forward (caching what backward needs in training mode) and backward
//! (accumulating parameter gradients, returning input gradients).
