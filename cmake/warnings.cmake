# Strict warnings for code written here (not for generated protobuf-c sources).
set(MCPHUB_WARNINGS
  -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes
  -Wold-style-definition -Wvla -Wpointer-arith -Wundef -Wwrite-strings
  -Wcast-align -Wnull-dereference -Wno-unused-parameter)
if(MCPHUB_WERROR)
  list(APPEND MCPHUB_WARNINGS -Werror)
endif()

# mcphub_strict(target): applies the project's warnings and feature macros to a target.
function(mcphub_strict target)
  target_compile_options(${target} PRIVATE ${MCPHUB_WARNINGS})
  target_compile_definitions(${target} PRIVATE _GNU_SOURCE)
endfunction()
