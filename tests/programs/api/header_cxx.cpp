// header_cxx.cpp — interposer.h compiles as C++ and its weak calls are skipped without the library.
#include <cstdio>
#include "interposer.h"

int main()
{
    int x = 0;
    INTERPOSER_CALL(kmemleak_not_leak, &x);
    INTERPOSER_CALL(__lsan_disable);
    INTERPOSER_CALL(__lsan_enable);
    std::printf("%s\n", INTERPOSER_AVAILABLE(interposer_scan) ? "loaded" : "not loaded");
    return 0;
}
