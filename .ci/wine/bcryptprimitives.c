/* For running the Windows tests under wine (.ci/run) only: Rust's standard
 * library (1.78+) gets random bytes from ProcessPrng in bcryptprimitives.dll,
 * which wine before 9.0 does not have (Debian 12 ships wine 8.0). This stand-in
 * takes them from RtlGenRandom (advapi32's SystemFunction036), as Rust did
 * before. It is put in the wine prefix, never in a wheel. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
