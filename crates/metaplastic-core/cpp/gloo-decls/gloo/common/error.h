#pragma once
// Declarations only; see ../context.h.
