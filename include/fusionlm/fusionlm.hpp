#pragma once
// The umbrella include: everything a downstream app needs.
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/tensor.hpp"
#include "core/threads.hpp"
