/* The factory model image, compiled in: installed into slot 0 when the model store is empty. */
    .section .rodata.factory, "a"
    .balign 16
    .global factory_image
factory_image:
    .incbin FACTORY_PATH
    .global factory_image_end
factory_image_end:
