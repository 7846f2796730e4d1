/* tls_lib.c — a library with a thread-local pointer, dlopen'ed by roots.c (mode tls_dlopen): its
   TLS block is dynamic TLS, malloc'ed by ld.so and reached through each thread's DTV.
   Not static: the store must not be optimized away. */
__thread void *tls_lib_value;

void tls_lib_set(void *p) { tls_lib_value = p; }
